"""Write tests/data/tiny_arcface_random.onnx: a 14k-parameter random-weight network with the
interface of an insightface ArcFace model (input 1x3x112x112, one embedding output), so the
tests run Identity Similarity's ArcFace path (loading, alignment, OpenCV inference) without
the real 174 MB w600k_r50.onnx.

    pip install onnx   # only to write the file; the tests read it with OpenCV
    .venv/bin/python tests/make_tiny_arcface.py
"""

import os

import torch
from torch import nn

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tiny_arcface_random.onnx")


def main():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 4, 4), nn.PReLU(8), nn.Conv2d(8, 8, 4, 4), nn.Flatten(),
                        nn.Linear(8 * 49, 32)).eval()
    torch.onnx.export(net, (torch.zeros(1, 3, 112, 112),), OUT, dynamo=False, input_names=["input.1"],
                      output_names=["embedding"], opset_version=11)
    print(OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
