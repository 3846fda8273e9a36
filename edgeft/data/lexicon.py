"""English words, their pronunciations and how common they are, from Festival's lexicons (Debian festlex-cmu: the
CMU pronouncing dictionary 0.4; festlex-poslex: a Wall Street Journal part-of-speech lexicon with log-probabilities;
both come with ``festival``). Used to make near-miss negatives for keyword spotting: words one phoneme away from a
keyword ("light", "ride", "bright" for "right"), and phrases of common words (continuous speech, where most false
accepts of a detector left running happen)."""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np

CMU = Path("/usr/share/festival/dicts/cmu/cmudict-0.4.out")
WSJ = Path("/usr/share/festival/dicts/wsj.wp39.poslexR")


def available() -> bool:
    return CMU.is_file() and WSJ.is_file()


@lru_cache(maxsize=1)
def pronunciations() -> dict[str, frozenset[tuple[str, ...]]]:
    """word -> its pronunciations (phoneme tuples, stress and syllables dropped); lower-case alphabetic words."""
    out: dict[str, set] = {}
    rx = re.compile(r'\("([a-z]+)" \S+ \((.*)\)\)$')
    with open(CMU, encoding="latin-1") as f:
        for line in f:
            m = rx.match(line.strip())
            if m:
                out.setdefault(m.group(1), set()).add(tuple(re.findall(r"[a-z]+", re.sub(r"\) \d\)", ")", m.group(2)))))
    return {w: frozenset(p) for w, p in out.items()}


@lru_cache(maxsize=1)
def word_scores() -> dict[str, float]:
    """word -> its highest log P(word | tag) in the WSJ lexicon over tags other than proper nouns (a rough measure
    of how common a word is; proper nouns alone do not count)."""
    out = {}
    rx = re.compile(r'\("([a-z]+)" \((.*)\) \(\) \)')
    with open(WSJ, encoding="latin-1") as f:
        for line in f:
            m = rx.match(line.strip())
            if m:
                lp = [float(v) for t, v in re.findall(r"\((\w+\$?) (-?[\d.]+)\)", m.group(2)) if not t.startswith("nnp")]
                if lp:
                    out[m.group(1)] = max(lp)
    return out


def _one_edit(a: tuple, b: tuple) -> bool:
    """One phoneme substituted, inserted or deleted."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) == 1
    if len(a) > len(b):
        a, b = b, a
    return any(b[:i] + b[i + 1:] == a for i in range(len(b)))


def _keyword_prons(keywords) -> list[tuple[str, ...]]:
    pr = pronunciations()
    return [p for k in keywords for p in pr.get(k.lower(), ())]


def sounds_like_keyword(word: str, keywords) -> bool:
    """A keyword, a homophone of one ("write", "know"), or a word that starts with a keyword's whole pronunciation
    ("stops", "upper", "going"): a detector that decides as audio arrives cannot tell these from the keyword, so
    they are never used as negatives."""
    kp = _keyword_prons(keywords)
    w = word.lower()
    return w in {k.lower() for k in keywords} or any(p[:len(q)] == q for p in pronunciations().get(w, ()) for q in kp)


def confusables(keywords) -> dict[str, list[str]]:
    """keyword -> common words one phoneme away from one of its pronunciations, most common first, never one that
    ``sounds_like_keyword`` (of any keyword). Empty lists when the lexicons are not installed."""
    if not available():
        return {k: [] for k in keywords}
    pr, sc = pronunciations(), word_scores()
    out = {}
    for k in keywords:
        kp = pr.get(k.lower(), frozenset())
        cand = [(sc[w], w) for w, ps in pr.items()
                if len(w) > 1 and w in sc and any(_one_edit(p, q) for p in ps for q in kp)
                and not sounds_like_keyword(w, keywords)]
        out[k] = [w for _, w in sorted(cand, key=lambda t: (-t[0], t[1]))]
    return out


VOWELS = frozenset("aa ae ah ao aw ay eh er ey ih iy ow oy uh uw".split())


def keyword_prefixed(keywords) -> dict[str, list[str]]:
    """keyword -> common words that begin with its whole pronunciation and go on for at least one more syllable
    ("nobody", "notice" for "no"; "going"; "upper"; "yesterday"), most common first. A detector that decides when the
    audio ends cannot tell them from the keyword, but one that confirms its decision a few hundred ms later
    (``stream.confirm_ms``) can: the extra syllable is in its window by then. Inflections without a new syllable
    ("stops", "goes") are left out: they end too soon after the keyword. Empty lists without the lexicons."""
    if not available():
        return {k: [] for k in keywords}
    pr, sc = pronunciations(), word_scores()
    kws = {k.lower() for k in keywords}
    out = {}
    for k in keywords:
        kp = pr.get(k.lower(), frozenset())
        cand = [(sc[w], w) for w, ps in pr.items() if w in sc and w not in kws
                and any(len(p) > len(q) and p[:len(q)] == q and VOWELS & set(p[len(q):]) for p in ps for q in kp)]
        out[k] = [w for _, w in sorted(cand, key=lambda t: (-t[0], t[1]))]
    return out


def common_words(keywords, n: int = 2000) -> list[str]:
    """The ``n`` most common words of the WSJ lexicon that have a pronunciation and do not sound like a keyword."""
    if not available():
        return []
    pr, sc = pronunciations(), word_scores()
    ok = [(v, w) for w, v in sc.items() if w in pr and (len(w) > 1 or w in ("a", "i"))
          and not sounds_like_keyword(w, keywords)]
    return [w for _, w in sorted(ok, key=lambda t: (-t[0], t[1]))[:n]]


def phrase(rng: np.random.Generator, words: list[str], near: list[str], n_words=(3, 6)) -> str:
    """A run of common words with one near-miss word at a random place (continuous speech, no keyword)."""
    k = int(rng.integers(n_words[0], n_words[1] + 1))
    ws = [words[int(i)] for i in rng.integers(0, len(words), k)]
    if near:
        ws[int(rng.integers(k))] = near[int(rng.integers(len(near)))]
    return " ".join(ws)
