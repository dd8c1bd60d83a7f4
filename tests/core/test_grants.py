"""Resources, globs, grants and ceilings."""

from __future__ import annotations

import pytest

from capgate import Ceiling, Glob, Grant, InvalidArgumentError, resource_problem


@pytest.mark.parametrize(
    "resource, ok",
    [
        ("/a", True),
        ("/a/b/c", True),
        ("/a/.hidden", True),
        ("/a/...", True),
        ("/x/é", True),
        ("", False),
        ("a/b", False),
        ("/", False),
        ("/a/", False),
        ("//a", False),
        ("/a/./b", False),
        ("/a/../b", False),
        ("/a/..", False),
        ("/a*", False),
        ("/a b", False),
        ("/a\x00b", False),
        ("/a\u200bb", False),
        ("/a\u202eb", False),
        ("/" + "a/" * 70 + "a", False),
        ("/" + "x" * 2000, False),
    ],
)
def test_resource_validity(resource, ok):
    assert (resource_problem(resource) is None) == ok


@pytest.mark.parametrize(
    "inner, outer, within",
    [
        ("/data/x", "/data/*", True),
        ("/data/*", "/data/*", True),
        ("/data/x/*", "/data/**", True),
        ("/data/**", "/data/**", True),
        ("/data/**", "/**", True),
        ("/data/*/y", "/data/**", True),
        ("/data/*/y", "/data/**/y", True),
        ("/data/**", "/data/*", False),
        ("/data/*", "/data/x", False),
        ("/data/x/*", "/data/*", False),
        ("/data", "/data/**", True),
        ("/datax", "/data/**", False),
        ("/other/**", "/data/**", False),
        ("/**", "/data/**", False),
    ],
)
def test_glob_containment_is_sound(inner, outer, within):
    assert Glob.parse(inner).within(Glob.parse(outer)) is within


def test_glob_containment_agrees_with_matching_on_samples():
    paths = ["/data", "/data/x", "/data/x/y", "/data/x/y/z", "/data/y", "/other", "/data/q/y"]
    globs = ["/data/*", "/data/**", "/data/x/*", "/data/*/y", "/**", "/data/**/y", "/data/x"]
    for a in globs:
        for b in globs:
            if Glob.parse(a).within(Glob.parse(b)):
                for p in paths:
                    if Glob.parse(a).matches(p):
                        assert Glob.parse(b).matches(p), (a, b, p)


def test_grants_and_ceilings():
    c = Ceiling.parse(["read,write:/data/**", "exec:/tools/search"])
    assert c.allows("read", "/data/x/y")
    assert c.allows("exec", "/tools/search")
    assert not c.allows("exec", "/tools/delete")
    assert not c.allows("delete", "/data/x")
    assert c.covers(Grant.parse("read:/data/reports/*"))
    assert not c.covers(Grant.parse("read,exec:/data/x"))
    assert not c.covers(Grant.parse("read:/**"))
    assert str(Grant.parse("write,read:/data/*")) == "read,write:/data/*"
    assert not Ceiling().allows("read", "/x")


@pytest.mark.parametrize(
    "bad",
    ["read", "read:", ":/x", "read:data", "re ad:/x", "read:/x/a*", "read,:/x", "read:/x/../y"],
)
def test_bad_grants_are_rejected(bad):
    with pytest.raises(InvalidArgumentError):
        Grant.parse(bad)
