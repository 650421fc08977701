"""Test-time augmentation beyond the flip: turned and scaled faces, their points mapped back."""
import numpy as np
import pytest

from fkd.core.config import load_params, parse_params, to_dict
from fkd.core.schema import ParamsError
from fkd.evaluation.evaluate import tta_label
from fkd.evaluation.inference import transforms_of, tta_average, unwarp_points, warp_faces, with_tta
from tests.conftest import ROOT

N_POINTS = 17


def blob_faces(centres) -> np.ndarray:
    """uint8 faces (N, 96, 96), each a Gaussian blob (sigma 3 px) at a sub-pixel (x, y) centre."""
    yy, xx = np.mgrid[0:96, 0:96]
    return np.stack([np.round(250 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 18.0)).astype(np.uint8) for x, y in centres])


def blob_centre_fn(images: np.ndarray) -> np.ndarray:
    """A 'model' that puts all 17 points on the intensity centroid: equivariant under any turn, scale or flip."""
    w = images.astype(np.float64)
    yy, xx = np.mgrid[0 : images.shape[1], 0 : images.shape[2]]
    centre = np.stack([(w * xx).sum((1, 2)) / w.sum((1, 2)), (w * yy).sum((1, 2)) / w.sum((1, 2))], axis=1)
    return np.tile(centre, N_POINTS)


CENTRES = [(60.3, 47.5), (35.8, 30.2), (50.0, 66.6)]


@pytest.mark.parametrize("transform", [(1.0, 10.0), (1.0, -20.0), (1.1, 0.0), (0.9, 5.0)])
def test_points_predicted_on_a_warped_face_map_back_onto_the_face(transform):
    faces = blob_faces(CENTRES)
    back = unwarp_points(blob_centre_fn(warp_faces(faces, transform)), transform)
    assert np.abs(back - np.tile(CENTRES, N_POINTS)).max() < 0.1


def test_a_positive_turn_is_clockwise_on_screen_and_a_scale_above_one_enlarges():
    faces = blob_faces([(70.0, 47.5)])  # right of the centre
    x, y = blob_centre_fn(warp_faces(faces, (1.0, 30.0)))[0, :2]
    assert y > 47.5 + 5 and x < 70.0  # y points down: clockwise moves a point right of centre downwards
    x, _ = blob_centre_fn(warp_faces(faces, (1.2, 0.0)))[0, :2]
    assert x == pytest.approx(47.5 + 1.2 * (70.0 - 47.5), abs=0.1)


def test_tta_with_transforms_keeps_an_equivariant_model_and_averages_a_biased_one():
    faces = blob_faces(CENTRES)
    transforms = [(1.0, -5.0), (1.0, 5.0), (0.95, 0.0), (1.05, 0.0)]
    truth = np.tile(CENTRES, N_POINTS)
    assert np.abs(with_tta(blob_centre_fn, transforms)(faces) - truth).max() < 0.1
    # 2 px too far down in whatever frame the model sees: a turn moves the error, and the average moves it back
    biased = lambda im: blob_centre_fn(im) + np.tile([0.0, 2.0], N_POINTS)  # noqa: E731
    turned = tta_average(biased, faces, [(1.0, 20.0)])
    assert np.abs(turned - truth)[:, 0].max() > 0.1  # the turned copy's error is not straight down
    assert np.allclose(tta_average(biased, faces), tta_average(biased, faces, [], biased(faces)))


def test_the_tta_section_is_typed_and_range_checked():
    raw = to_dict(load_params(ROOT / "params.yaml"))
    raw["tta"] = {"turns_deg": [-5, 5], "scales": [0.95]}
    p = parse_params(raw).tta
    assert transforms_of(p) == [(1.0, -5.0), (1.0, 5.0), (0.95, 0.0)]
    assert tta_label(transforms_of(p)) == "TTA: flip, turns [-5.0, 5.0], scales [0.95]" and tta_label([]) == "flip TTA"
    for key, value in [("turns_deg", [45]), ("scales", [2.0]), ("scales", [0.5]), ("turns_deg", ["5"])]:
        bad = to_dict(load_params(ROOT / "params.yaml"))
        bad["tta"][key] = value
        with pytest.raises(ParamsError, match=rf"tta\.{key}"):
            parse_params(bad)


def test_benchmark_model_arguments_take_an_optional_label_and_refuse_an_unknown_model(tmp_path):
    import argparse

    from benchmarks.report import named_models
    from fkd.models.heatmap.network import build
    from fkd.nn.torch_nn import save_checkpoint
    from tests.test_safe_models import TINY_HEATMAP

    save_checkpoint(tmp_path / "h.safetensors", build(TINY_HEATMAP).state_dict(), TINY_HEATMAP)
    path = tmp_path / "h.safetensors"
    parser = argparse.ArgumentParser()
    models = named_models(parser, [f"heatmap={path}", f"heatmap:map_loss={path}"])
    assert [label for label, _ in models] == ["heatmap", "map_loss"]
    assert models[1][1](np.zeros((2, 96, 96), np.uint8)).shape == (2, 34)
    with pytest.raises(SystemExit):
        named_models(parser, [f"nomodel={path}"])
