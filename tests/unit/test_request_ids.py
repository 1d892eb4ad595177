"""X-Request-ID values: 32 hex digits, a per-worker random half and a counter, unique across the table's wrap."""

from __future__ import annotations

from pyngress.runtime.request_head import RequestIds


def test_ids_count_up_across_the_low_digit_table_and_stay_unique() -> None:
    ids = RequestIds()
    made = [ids() for _ in range(3 * 4096 + 5)]
    assert len(set(made)) == len(made)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in made)
    assert {i[:16] for i in made} == {made[0][:16]}  # one worker, one random half
    assert [int(i[16:], 16) for i in made] == list(range(1, len(made) + 1))  # 4095 -> 4096 -> 4097 included


def test_two_workers_differ_in_the_random_half() -> None:
    assert RequestIds()()[:16] != RequestIds()()[:16]
