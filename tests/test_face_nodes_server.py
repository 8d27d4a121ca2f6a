"""Smaller defects of the face nodes, through a real ComfyUI server (tiny models): RGBA frames,
a mask of another size, a face swap with no face in any frame, and a saved workflow naming the
'haar' detector where OpenCV cannot run it."""

import asyncio
import os

import cv2
import pytest

import face_swap_video
from conftest import FACE
from test_server_e2e import assert_success, tiny

SWAP = "standin_wan21_face_swap"
PREPARE, LATENT_MASK, SAMPLER, SOURCE = "42", "44", "13", "40"
NO_FACE_VIDEO = "standin_no_face_source.mp4"


@pytest.fixture(scope="module")
def server(comfy_server):
    frames, _ = face_swap_video.make_video(7, 72, 70, no_face=tuple(range(7)))
    face_swap_video.write_video(os.path.join(comfy_server.base_dir, "input", NO_FACE_VIDEO), frames)
    return comfy_server


def follow(server, prompt):
    """(the event that ended the prompt, the nodes that started, whether any progress came)."""
    events = []

    async def record(event, session):
        events.append(event)

    _, final = asyncio.run(server.follow(prompt, record, timeout=600))
    started = [e["data"].get("node") for e in events if e["type"] == "executing"]
    return final, started, any(e["type"] == "progress" and e["data"].get("node") == SAMPLER for e in events)


def reference_and_source(extra: dict) -> dict:
    """The reference identity and the source video's frames, plus ``extra`` nodes."""
    prompt = {
        "5": {"class_type": "VAELoader", "inputs": {"vae_name": "standin_tiny_wan21_vae.safetensors"}},
        "6": {"class_type": "LoadImage", "inputs": {"image": FACE}},
        "8": {"class_type": "StandIn_EncodeReferenceFace", "inputs": {"image": ["6", 0], "vae": ["5", 0],
                                                                      "detector": "auto", "white_background": True}},
        "40": {"class_type": "LoadVideo", "inputs": {"file": face_swap_video_name()}},
        "41": {"class_type": "GetVideoComponents", "inputs": {"video": ["40", 0]}},
    }
    prompt.update(extra)
    return prompt


def face_swap_video_name():
    from make_workflows import FACE_SWAP_VIDEO
    return FACE_SWAP_VIDEO


def test_rgba_frames_are_prepared_from_their_colour(server):
    import tiny_models
    prompt = reference_and_source({
        "50": {"class_type": "ImageToMask", "inputs": {"image": ["41", 0], "channel": "red"}},
        "51": {"class_type": "JoinImageWithAlpha", "inputs": {"image": ["41", 0], "alpha": ["50", 0]}},
        PREPARE: {"class_type": "StandIn_PrepareFaceSwapVideo", "inputs": {
            "images": ["51", 0], "identity": ["8", 0], "align": True, "dilation": 10, "feather": 21}},
        "52": {"class_type": "PreviewImage", "inputs": {"images": [PREPARE, 0]}},
    })
    prompt["5"]["inputs"]["vae_name"] = tiny_models.TINY_VAE
    entry = server.run(prompt, timeout=300)
    assert_success(server, entry)
    assert len(entry["outputs"]["52"]["images"]) == 5  # 7 frames trimmed to 4n+1, no broadcast error


def test_a_face_swap_with_no_face_in_any_frame_is_refused_before_sampling(server):
    prompt = tiny(SWAP, seed=11)
    prompt[SOURCE]["inputs"]["file"] = NO_FACE_VIDEO
    final, started, sampled = follow(server, prompt)
    assert final["type"] == "execution_error" and final["data"]["node_id"] == PREPARE
    message = final["data"]["exception_message"]
    assert "No face was found in any of the 5 frames" in message and "allow_no_face" in message
    assert SAMPLER not in started and not sampled
    # Asked to go on, it does.
    prompt = tiny(SWAP, seed=11)
    prompt[SOURCE]["inputs"]["file"] = NO_FACE_VIDEO
    prompt[PREPARE]["inputs"]["allow_no_face"] = True
    assert_success(server, server.run(prompt, timeout=600))


def test_a_mask_of_another_size_is_refused_before_sampling(server):
    prompt = tiny(SWAP, seed=12)
    prompt["60"] = {"class_type": "MaskToImage", "inputs": {"mask": [PREPARE, 1]}}
    prompt["61"] = {"class_type": "ImageScale", "inputs": {"image": ["60", 0], "upscale_method": "nearest-exact",
                                                           "width": 128, "height": 128, "crop": "disabled"}}
    prompt["62"] = {"class_type": "ImageToMask", "inputs": {"image": ["61", 0], "channel": "red"}}
    prompt[LATENT_MASK]["inputs"]["mask"] = ["62", 0]
    final, started, sampled = follow(server, prompt)
    assert final["type"] == "execution_error" and final["data"]["node_id"] == LATENT_MASK
    message = final["data"]["exception_message"]
    assert "The mask is 128x128 but the video latent is 8x8, i.e. 64x64 frames" in message
    assert SAMPLER not in started and not sampled


def test_a_saved_haar_detector_loads_where_opencv_has_none(server):
    import tiny_models
    prompt = reference_and_source({"9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 1]}}})
    del prompt["40"], prompt["41"]
    prompt["5"]["inputs"]["vae_name"] = tiny_models.TINY_VAE
    prompt["8"]["inputs"]["detector"] = "haar"
    options = server.get("/object_info/StandIn_EncodeReferenceFace")["StandIn_EncodeReferenceFace"]["input"]
    offered = options["required"]["detector"][0]
    entry = server.run(prompt, timeout=300)
    assert_success(server, entry)  # never "Value not in list"
    if hasattr(cv2, "CascadeClassifier"):
        assert "haar" in offered
    else:
        assert "haar" not in offered
        assert "detector 'haar' is not available here, using 'auto'" in server.log_tail(400)
