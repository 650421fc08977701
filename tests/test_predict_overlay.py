"""fkd.predict's overlays are drawn with PIL (ImageDraw), not scikit-image."""
from __future__ import annotations

import sys

import numpy as np

from fkd.core.keypoints import EXTENDED_NAMES
from fkd.predict import chain, geometry, overlay


def test_overlay_is_drawn_without_scikit_image(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage.draw", None)  # importing it now raises ImportError
    photo = np.full((600, 800), 128, np.uint8)  # big enough to be drawn 1:1
    points = np.full((len(EXTENDED_NAMES), 2), np.nan)
    points[0], points[1], points[10] = (300, 250), (200, 250), (250, 330)  # left eye, right eye, nose tip
    box = geometry.Box(150.0, 150.0, 200.0, 250.0)
    result = chain.FaceResult(box, points, np.eye(2, 3), np.zeros((96, 96), np.uint8))
    out = overlay.draw_overlay(photo, [result])
    assert out.shape == (600, 800, 3) and out.dtype == np.uint8
    assert tuple(out[250, 300]) == overlay.LEFT_COLOUR and tuple(out[250, 200]) == overlay.RIGHT_COLOUR
    assert tuple(out[330, 250]) == overlay.CENTRE_COLOUR
    radius = np.clip(100 / 22, 2, 12)
    assert tuple(out[250, 300 + int(radius) + 1]) == (0, 0, 0)  # the dark ring around a dot
    assert tuple(out[150, 250]) == overlay.BOX_COLOUR and tuple(out[300, 150]) == overlay.BOX_COLOUR  # top and left edges
    assert tuple(out[300, 250]) == (128, 128, 128) and tuple(out[10, 10]) == (128, 128, 128)  # the photo elsewhere
    assert tuple(photo.shape) == (600, 800)  # the photo itself is not drawn on
