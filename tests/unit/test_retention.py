from picluster_agent.duties.retention import Finished


def _finished(n: int) -> Finished:
    finished = Finished()
    for i in range(n):
        finished.add(float(100 + i), f"j{i:02d}")
    return finished


def test_one_round_keeps_exactly_the_newest_keep():
    # Before: the ids already taken out were subtracted twice, so a round of 10 with
    # keep=4 removed 3 and left 7.
    finished = _finished(10)
    assert finished.past_retention(keep=4, cutoff=0.0, limit=100) == [f"j{i:02d}" for i in range(6)]
    assert len(finished) == 4


def test_age_removes_older_ones_even_within_the_count():
    finished = _finished(10)
    assert finished.past_retention(keep=100, cutoff=103.0, limit=100) == ["j00", "j01", "j02"]


def test_limit_bounds_one_round_and_put_back_returns_them_first():
    finished = _finished(10)
    taken = finished.past_retention(keep=0, cutoff=0.0, limit=3)
    assert taken == ["j00", "j01", "j02"]
    finished.put_back(taken)
    assert finished.past_retention(keep=8, cutoff=0.0, limit=100) == ["j00", "j01"]
