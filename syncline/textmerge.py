"""Deterministic three-way text merge, in Unicode code points.

Theory of operation: ``merge3(base, mine, theirs)`` diffs base->mine and base->theirs
with Myers' O(ND) algorithm over code points (common prefix and suffix trimmed first),
turns each diff into hunks ``(start, end, replacement)`` in base coordinates, and
applies both hunk lists to base. Hunks that do not overlap both apply. Hunks that
overlap (or insert at the same point) are the declared fallback: the overlapping
region becomes theirs' version followed by mine's, so no one's text is lost; equal
hunks apply once. No time-outs: the same inputs always give the same output, on the
server and in every client, because the offset unit (a code point, so an emoji is one
unit) is fixed by the protocol.

Worst case is O((N+M)·D); a diff whose edit distance passes ``MAX_EDIT_DISTANCE``
falls back to one hunk replacing the whole trimmed middle, still deterministically.
"""

from __future__ import annotations

__all__ = ["MAX_EDIT_DISTANCE", "Hunk", "diff_hunks", "merge3"]

MAX_EDIT_DISTANCE = 2000

Hunk = tuple[int, int, str]
"""Replace ``base[start:end]`` with the string."""


def diff_hunks(base: str, new: str) -> list[Hunk]:
    """The edits that turn ``base`` into ``new``, as hunks in base coordinates."""
    if base == new:
        return []
    prefix = 0
    limit = min(len(base), len(new))
    while prefix < limit and base[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and base[len(base) - 1 - suffix] == new[len(new) - 1 - suffix]:
        suffix += 1
    a = base[prefix : len(base) - suffix]
    b = new[prefix : len(new) - suffix]
    script = _myers(a, b)
    if script is None:
        return [(prefix, prefix + len(a), b)]
    hunks: list[Hunk] = []
    i = j = 0
    start: int | None = None
    ins: list[str] = []
    for op in script:
        if op == "=":
            if start is not None:
                hunks.append((prefix + start, prefix + i, "".join(ins)))
                start, ins = None, []
            i += 1
            j += 1
            continue
        if start is None:
            start = i
        if op == "-":
            i += 1
        else:
            ins.append(b[j])
            j += 1
    if start is not None:
        hunks.append((prefix + start, prefix + i, "".join(ins)))
    return hunks


def _myers(a: str, b: str) -> list[str] | None:
    """Shortest edit script as a list of '=', '-', '+'; deletions before insertions."""
    n, m = len(a), len(b)
    if n == 0:
        return ["+"] * m
    if m == 0:
        return ["-"] * n
    offset = n + m
    v = [0] * (2 * offset + 2)
    trace: list[list[int]] = []
    for d in range(min(offset, MAX_EDIT_DISTANCE) + 1):
        trace.append(v.copy())
        for k in range(-d, d + 1, 2):
            if k == -d or (k != d and v[offset + k - 1] < v[offset + k + 1]):
                x = v[offset + k + 1]
            else:
                x = v[offset + k - 1] + 1
            y = x - k
            while x < n and y < m and a[x] == b[y]:
                x += 1
                y += 1
            v[offset + k] = x
            if x >= n and y >= m:
                return _backtrack(trace, a, b, offset, d)
    return None


def _backtrack(trace: list[list[int]], a: str, b: str, offset: int, d_end: int) -> list[str]:
    x, y = len(a), len(b)
    script: list[str] = []
    for d in range(d_end, 0, -1):
        v = trace[d]
        k = x - y
        if k == -d or (k != d and v[offset + k - 1] < v[offset + k + 1]):
            prev_k = k + 1
        else:
            prev_k = k - 1
        prev_x = v[offset + prev_k]
        prev_y = prev_x - prev_k
        while x > prev_x and y > prev_y:
            script.append("=")
            x -= 1
            y -= 1
        script.append("+" if x == prev_x else "-")
        x, y = prev_x, prev_y
    while x > 0 and y > 0:
        script.append("=")
        x -= 1
        y -= 1
    script.reverse()
    return script


def merge3(base: str, mine: str, theirs: str) -> str:
    """Merge my edit of ``base`` into ``theirs`` (the committed text)."""
    if mine in (base, theirs):
        return theirs
    if theirs == base:
        return mine
    return _apply_both(base, diff_hunks(base, theirs), diff_hunks(base, mine))


def _overlaps(h1: Hunk, h2: Hunk) -> bool:
    s1, e1, _ = h1
    s2, e2, _ = h2
    if s1 == e1 and s2 == e2:
        return s1 == s2  # two inserts at one point
    if s1 == e1:
        return s2 < s1 < e2 or s1 == s2
    if s2 == e2:
        return s1 < s2 < e1 or s1 == s2
    return s1 < e2 and s2 < e1


def _apply_both(base: str, theirs: list[Hunk], mine: list[Hunk]) -> str:
    out: list[str] = []
    pos = 0
    ti = mi = 0
    while ti < len(theirs) or mi < len(mine):
        # Take the next group: a hunk plus every hunk of either side that overlaps it,
        # transitively.
        if mi >= len(mine) or (ti < len(theirs) and theirs[ti][0] <= mine[mi][0]):
            group_t, group_m = [theirs[ti]], []
            ti += 1
        else:
            group_t, group_m = [], [mine[mi]]
            mi += 1
        start = (group_t or group_m)[0][0]
        end = max(h[1] for h in group_t + group_m)
        grew = True
        while grew:
            grew = False
            probe: Hunk = (start, end, "")
            if ti < len(theirs) and (
                _overlaps(theirs[ti], probe) or any(_overlaps(theirs[ti], h) for h in group_m)
            ):
                group_t.append(theirs[ti])
                ti += 1
                grew = True
            if mi < len(mine) and (
                _overlaps(mine[mi], probe) or any(_overlaps(mine[mi], h) for h in group_t)
            ):
                group_m.append(mine[mi])
                mi += 1
                grew = True
            end = max(h[1] for h in group_t + group_m)
            start = min(h[0] for h in group_t + group_m)
        out.append(base[pos:start])
        region = base[start:end]
        t_text = _apply(region, group_t, start)
        m_text = _apply(region, group_m, start)
        if not group_m or t_text == m_text:
            out.append(t_text)
        elif not group_t:
            out.append(m_text)
        else:
            out.append(t_text + m_text)
        pos = end
    out.append(base[pos:])
    return "".join(out)


def _apply(region: str, hunks: list[Hunk], origin: int) -> str:
    out: list[str] = []
    pos = 0
    for s, e, text in hunks:
        out.append(region[pos : s - origin])
        out.append(text)
        pos = e - origin
    out.append(region[pos:])
    return "".join(out)
