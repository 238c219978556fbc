"""`make bench` rewrites docs/performance.md but keeps its hand-written end."""

from __future__ import annotations

from bench.docs import HAND_WRITTEN, keep_hand_written


def test_the_hand_written_part_survives_a_new_run() -> None:
    previous = f"# old tables\n\n{HAND_WRITTEN}\n\n## Retention\n\nmeasured by hand\n"
    assert keep_hand_written("# new tables\n", previous) == (
        f"# new tables\n\n{HAND_WRITTEN}\n\n## Retention\n\nmeasured by hand\n")


def test_without_one_the_document_is_all_generated() -> None:
    assert keep_hand_written("# new tables\n", "# old tables\n") == "# new tables\n"
