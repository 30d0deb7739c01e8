import torch

from training.models.pool import ImagePool


def _image(value: float) -> torch.Tensor:
    return torch.full((1, 1, 2, 2), float(value))


def test_pool_returns_inputs_until_full():
    pool = ImagePool(size=5, seed=0)
    for i in range(5):
        assert torch.equal(pool.query(_image(i)), _image(i))
    assert [im[0, 0, 0, 0].item() for im in pool.images] == [0, 1, 2, 3, 4]


def test_full_pool_swaps_about_half_the_time_and_stores_the_new_image():
    pool = ImagePool(size=10, seed=123)
    for i in range(10):
        pool.query(_image(i))
    swaps = 0
    for i in range(10, 2010):
        before = {im[0, 0, 0, 0].item() for im in pool.images}
        out = pool.query(_image(i))[0, 0, 0, 0].item()
        after = {im[0, 0, 0, 0].item() for im in pool.images}
        if out == i:  # kept: the pool is unchanged
            assert after == before
        else:  # swapped: an older stored image came out and the new one took its place
            swaps += 1
            assert out in before and out not in after and i in after
        assert len(pool.images) == 10
    assert 900 < swaps < 1100  # probability 1/2 over 2000 queries


def test_pool_is_deterministic_for_a_seed_and_resumes_from_its_state():
    def run(pool, start, stop):
        return [pool.query(_image(i))[0, 0, 0, 0].item() for i in range(start, stop)]

    a, b = ImagePool(4, seed=7), ImagePool(4, seed=7)
    assert run(a, 0, 50) == run(b, 0, 50)
    resumed = ImagePool(4, seed=999)
    resumed.load_state_dict(a.state_dict())
    assert run(a, 50, 100) == run(resumed, 50, 100)


def test_pool_of_size_zero_is_a_pass_through():
    pool = ImagePool(size=0)
    batch = torch.randn(3, 3, 4, 4)
    assert pool.query(batch) is batch and pool.images == []


def test_pool_handles_batches_item_by_item():
    pool = ImagePool(size=3, seed=0)
    out = pool.query(torch.arange(5.0).view(5, 1, 1, 1))
    assert out.shape == (5, 1, 1, 1) and len(pool.images) == 3
