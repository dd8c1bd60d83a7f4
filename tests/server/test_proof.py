"""The audit ledger's proof, on its own: canonical records, the hash chain, signed
checkpoints, and the first break a walk finds for each kind of tampering."""

from __future__ import annotations

import dataclasses

import pytest

from capgate_server.store import GENESIS, Checkpoint, LedgerKey, canonical, link, walk


def chain(n: int) -> list[tuple[int, bytes, bytes]]:
    out, digest = [], GENESIS
    for pos in range(1, n + 1):
        record = canonical((pos * 1.5, "admin", "revoke", f"id-{pos}", True, None, 3))
        digest = link(digest, record)
        out.append((pos, record, digest))
    return out


def test_canonical_bytes_have_one_reading():
    assert canonical(("ab", "c")) != canonical(("a", "bc"))
    assert canonical((1,)) != canonical((1.0,)) != canonical((True,))
    assert canonical((None,)) != canonical(("",))


def test_an_intact_record_walks_to_its_head():
    records = chain(10)
    key = LedgerKey.generate()
    marks = [key.sign(5, records[4][2], 100.0), key.sign(10, records[9][2], 200.0)]
    broke, pos, head = walk(records, 0, GENESIS, marks)
    assert broke is None and pos == 10 and head == records[9][2]


@pytest.mark.parametrize(
    "tamper, at",
    [
        (lambda r: [*r[:3], (4, canonical(("edited",)), r[3][2]), *r[4:]], 4),  # an edit
        (lambda r: r[:3] + r[4:], 4),  # a deletion
        (lambda r: [(p, rec, d) for p, rec, d in r[:5]] + [(6, r[6][1], r[6][2])], 6),  # reorder
    ],
)
def test_each_kind_of_tampering_breaks_the_walk_where_it_happened(tamper, at):
    records = chain(8)
    broke, _, _ = walk(tamper(records), 0, GENESIS, [])
    assert broke is not None and broke.pos == at


def test_a_chain_rewritten_end_to_end_still_misses_the_signed_checkpoint():
    records = chain(6)
    key = LedgerKey.generate()
    mark = key.sign(6, records[5][2], 100.0)
    forged, digest = [], GENESIS  # one record edited, every digest after it recomputed
    for pos, record, _ in records:
        record = canonical(("forged",)) if pos == 3 else record
        digest = link(digest, record)
        forged.append((pos, record, digest))
    broke, _, _ = walk(forged, 0, GENESIS, [mark])
    assert broke is not None and broke.pos == 6 and "checkpoint" in broke.reason


def test_a_truncated_tail_is_caught_by_a_checkpoint_beyond_it():
    records = chain(9)
    mark = LedgerKey.generate().sign(9, records[8][2], 1.0)
    broke, _, _ = walk(records[:7], 0, GENESIS, [mark])
    assert broke is not None and broke.pos == 8 and "gone" in broke.reason


def test_checkpoints_are_signed_and_travel_as_json():
    key, other = LedgerKey.generate(), LedgerKey.generate()
    mark = key.sign(3, b"\x01" * 32, 12.5)
    assert mark.valid() and mark.valid([key.key_id]) and not mark.valid([other.key_id])
    assert Checkpoint.from_json(mark.to_json()) == mark
    assert not dataclasses.replace(mark, pos=4).valid()
    assert not dataclasses.replace(mark, digest="00" * 32).valid()
    # another key cannot pass its signature off as this one's
    forged = other.sign(3, b"\x01" * 32, 12.5)
    assert not dataclasses.replace(forged, key_id=key.key_id, public_key=key.public_key).valid()
    assert LedgerKey.from_bytes(key.private_bytes()).key_id == key.key_id
