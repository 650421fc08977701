import numpy as np

from benchmarks.val_twins import nearest_similarity
from fkd.sources.synthetic import draw_face


def test_a_face_and_its_near_copy_are_twins_and_other_faces_are_not():
    rng = np.random.default_rng(0)
    faces = np.stack([draw_face(rng)[0] for _ in range(6)])
    noisy = np.clip(faces[:1].astype(int) + rng.integers(-6, 7, faces[:1].shape), 0, 255).astype(np.uint8)
    similarity = nearest_similarity(np.concatenate([noisy, faces[5:]]), faces[:5])
    assert similarity.shape == (2,)
    assert similarity[0] > 0.97 and similarity[1] < similarity[0]
    assert abs(nearest_similarity(faces[:1], faces[:1])[0] - 1) < 1e-5
