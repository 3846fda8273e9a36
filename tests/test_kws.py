"""Keyword spotting: features vs torchaudio, streaming equivalences, scoring, bad wavs, the pipeline."""
import json
import shutil
import wave

import numpy as np
import pytest
import torch

from edgeft.bench.kws_scoring import combine, detections_from_posteriors, score
from edgeft.data.audio import (KEYWORDS, load_clips, make_kws_tts, read_wav, scan_speech_commands, write_wav)
from edgeft.errors import DataError, UnsupportedError
from edgeft.recipe import REPO_RECIPES
from edgeft.runtime.features import LogMel, StreamingLogMel

needs_tts = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("flite") is None,
                               reason="espeak-ng/flite not installed (scripts/setup.sh installs them as root)")


def test_logmel_matches_torchaudio_and_torch_port():
    import torchaudio

    from edgeft.tasks.kws.task import torch_logmel

    lm = LogMel()
    x = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
    ours = lm.clip_features(x)
    ta = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=512, win_length=400, hop_length=160, f_min=20,
                                              f_max=7600, n_mels=40, center=False, power=2.0, norm=None, mel_scale="htk")
    ref = torch.log(ta(torch.from_numpy(x)) + 1e-6).numpy()
    assert ours.shape == ref.shape == (40, 97)
    assert np.abs(ours - ref).max() < 1e-4
    assert np.abs(torch_logmel(torch.from_numpy(x)[None], lm)[0].numpy() - ours).max() < 1e-4


def test_incremental_features_equal_full_window():
    lm = LogMel()
    x = (np.random.default_rng(1).standard_normal(3 * 16000) * 0.2).astype(np.float32)
    full = lm.frames_from(x)
    s = StreamingLogMel(lm)
    rng = np.random.default_rng(2)
    parts, i = [], 0
    while i < len(x):                       # irregular chunk sizes, as audio callbacks deliver them
        n = int(rng.integers(1, 900))
        parts.append(s.accept(x[i:i + n]))
        i += n
    inc = np.concatenate(parts, 1)
    assert inc.shape == full.shape and np.abs(inc - full).max() < 1e-5
    long = (np.random.default_rng(4).standard_normal(61 * 16000) * 0.2).astype(np.float32)   # > one 6000-frame chunk
    f = lm.frames_from(long)
    assert f.shape == (40, lm.frames(len(long)))
    for a in (0, 5999, 6000, f.shape[1] - 1):                    # each side of the chunk boundary, frame by frame
        assert np.abs(f[:, a] - lm.frames_from(long[a * 160:a * 160 + 512])[:, 0]).max() < 1e-5


@pytest.mark.parametrize("name", ["ds_tcn", "ds_tcn_m"])
def test_streaming_model_equals_full_window(name):
    from edgeft.models import create_model
    from edgeft.models.audio import streaming_wrapper

    m = create_model(name, 12).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 2)
    st = streaming_wrapper(m, 97, 2)
    feats = torch.randn(1, 40, 240)
    states = [torch.zeros(s) for s in st.state_shapes()]
    worst = 0.0
    with torch.no_grad():
        for t in range(0, 240, 2):
            out = st(feats[..., t:t + 2], *states)
            states = list(out[1:])
            if t + 2 >= 97:
                worst = max(worst, float((m(feats[..., t + 2 - 97:t + 2]) - out[0]).abs().max()))
    assert worst < 1e-5


@pytest.mark.parametrize("lm", [LogMel(), LogMel(n_fft=480, win=480, hop=320, f_max=4000, n_mfcc=10)],
                         ids=["logmel-2-frames-per-hop", "mfcc-1-frame-per-hop"])
def test_audio_streaming_graph_equals_front_end_and_full_window(lm):
    """The one-call-per-hop graph (audio in: frames, DFT, mel, log, DCT, model, smoothing) = numpy features of the
    stream (n_fft - hop zeros first) + the full-window model, hop by hop; and its ring = the trailing average."""
    from edgeft.models.audio import _ds_tcn, audio_streaming_wrapper, streaming_wrapper

    torch.manual_seed(0)
    m = _ds_tcn(12, n_mels=lm.n_feat, dilations=(1, 2)).eval()
    frames, hop = lm.frames(16000), 320
    g = audio_streaming_wrapper(streaming_wrapper(m, frames, hop // lm.hop), lm, hop, 3, 12).eval()
    x = (np.random.default_rng(0).standard_normal(12000) * 0.1).astype(np.float32)
    feats = lm.frames_from(np.concatenate([np.zeros(lm.n_fft - lm.hop, np.float32), x]))
    feats = np.concatenate([np.repeat(lm.silence_column(), frames, 1), feats], 1)
    states = [torch.zeros(s) for _, s in g.io_spec()["states"]]
    worst = 0.0
    with torch.no_grad():
        for _ in range(frames + 4):          # warm up on zero audio, as the detector does: silence everywhere
            states = list(g(torch.zeros(1, hop), *states)[2:])
        probs = [torch.softmax(m(torch.from_numpy(feats[None, :, :frames])), -1)[0].numpy()] * 3
        for j in range(len(x) // hop):
            out = g(torch.from_numpy(x[None, j * hop:(j + 1) * hop]), *states)
            states = list(out[2:])
            end = frames + (j + 1) * hop // lm.hop
            ref = m(torch.from_numpy(feats[None, :, end - frames:end]))
            worst = max(worst, float((out[0] - ref).abs().max()))
            probs.append(torch.softmax(ref, -1)[0].numpy())
            assert np.abs(out[1][0].numpy() - np.mean(probs[-3:], 0)).max() < 1e-5
    assert worst < 1e-4


def _fake_stream(kw_idx, labels, threshold, confirm, refractory_s=1.0):
    """A KwsStream whose decision rule runs on given smoothed posteriors (no model)."""
    from collections import deque
    from types import SimpleNamespace

    from edgeft.runtime.kws import KwsStream

    s = object.__new__(KwsStream)
    s.det = SimpleNamespace(threshold=threshold, refractory_s=refractory_s, confirm=confirm,
                            model=SimpleNamespace(labels=labels))
    s.kw_arr, s.last_det_t, s.detections = np.asarray(kw_idx), -1e9, []
    s.pending_kw = deque([None] * confirm)
    return s


@pytest.mark.parametrize("confirm", [0, 1, 5, 15])
def test_confirmation_rule_is_the_same_hop_by_hop_and_over_an_array(confirm):
    """``confirm_scores`` + ``detections_from_posteriors`` (calibration, bench, sweeps) give exactly the detections
    of the stream's own decision, hop by hop, at several thresholds, on random posteriors with plateaus and spikes."""
    from edgeft.runtime.kws import confirm_scores

    labels = ["a", "b", "c", "_unknown_", "_silence_"]
    kw = [0, 1, 2]
    rng = np.random.default_rng(confirm)
    post = rng.dirichlet(np.full(5, 0.3), 3000).astype(np.float32)
    post = np.repeat(post, rng.integers(1, 12, len(post)), 0)[:4000]        # plateaus of 1-11 hops
    hop_s = 0.02
    for th in (0.3, 0.5, 0.8):
        st = _fake_stream(kw, labels, th, confirm)
        for j, p in enumerate(post):
            st._decide(p, (j + 1) * hop_s)
        offline = detections_from_posteriors(confirm_scores(post, kw, confirm), labels, kw, hop_s, th, 1.0)
        assert [(d["label"], d["t_s"], d["score"]) for d in st.detections] == \
               [(d["label"], round(d["t_s"], 4), d["score"]) for d in offline]
        assert len(offline) > 3


def test_confirmation_drops_a_keyword_onset_and_keeps_a_keyword():
    """A keyword posterior that reaches the threshold for 100 ms and falls (a word that only begins like "no")
    fires without confirmation and not with 300 ms of it; one that stays up 500 ms fires 300 ms later."""
    from edgeft.runtime.kws import confirm_scores

    labels, kw = ["no", "yes", "_unknown_"], [0, 1]
    post = np.tile(np.array([0.05, 0.05, 0.9], np.float32), (200, 1))
    post[50:55] = [0.8, 0.05, 0.15]             # onset only: 5 hops
    post[120:145] = [0.85, 0.05, 0.1]           # a keyword: 25 hops
    plain = detections_from_posteriors(confirm_scores(post, kw, 0), labels, kw, 0.02, 0.7, 1.0)
    conf = detections_from_posteriors(confirm_scores(post, kw, 15), labels, kw, 0.02, 0.7, 1.0)
    assert [d["t_s"] for d in plain] == [1.02, 2.42]
    assert [(d["label"], d["t_s"]) for d in conf] == [("no", 2.72)]           # 15 hops (300 ms) after 2.42 s
    assert np.array_equal(confirm_scores(post, kw, 0), post)


def test_confirm_ms_out_of_range_is_one_clear_error(tmp_path, cli):
    """stream.confirm_ms from a recipe (--set) or given to the detector: out of 0..2000 ms it is refused with the
    value and what is valid, exit 2 from the CLI, before any data is read."""
    from edgeft.recipe import load_recipe
    from edgeft.errors import RecipeError
    from edgeft.runtime.kws import check_confirm

    assert load_recipe(REPO_RECIPES / "kws" / "dscnn_s.yaml", ["stream.confirm_ms=300"]).stream.confirm_ms == 300
    with pytest.raises(RecipeError, match="stream.confirm_ms"):
        load_recipe(REPO_RECIPES / "kws" / "dscnn_s.yaml", ["stream.confirm_ms=-20"])
    with pytest.raises(UnsupportedError, match=r"confirm_ms 5000: .*valid is 0 <= confirm_ms <= 2000"):
        check_confirm(5000)
    check_confirm(0)
    r = cli("finetune", "--recipe", "kws/dscnn_s", "--out", tmp_path / "run", "--set", "stream.confirm_ms=-20")
    assert r.code == 2 and "stream.confirm_ms" in r.err and r.err.count("\n") == 1, r.err
    assert not (tmp_path / "run").exists()


def test_scoring_hit_window_debounce_wrong_label():
    events = [{"label": "yes", "start_s": 2.0, "end_s": 2.5}, {"label": "no", "start_s": 6.0, "end_s": 6.4},
              {"label": "up", "start_s": 10.0, "end_s": 10.5}]
    dets = [{"label": "yes", "t_s": 2.6}, {"label": "yes", "t_s": 3.2},        # TP + repeat in window (ignored)
            {"label": "go", "t_s": 6.3},                                        # wrong label in window: FA (+ miss)
            {"label": "up", "t_s": 11.6},                                       # 1.1 s after the end: outside -> FA
            {"label": "on", "t_s": 20.0}, {"label": "on", "t_s": 20.5},         # debounced: one FA
            {"label": "off", "t_s": 22.0}]
    s = score(dets, events, length_s=3600.0)
    assert (s["tp"], s["fn"], s["fa"], s["fa_wrong_label"]) == (1, 2, 4, 1)
    assert s["missed"] == {"no": 1, "up": 1}                                   # which keywords were missed
    assert s["delays_ms"] == pytest.approx([100.0])
    c = combine(s, score([], [], 3600.0))
    assert c["frr"] == pytest.approx(2 / 3) and c["negative_hours"] == pytest.approx(2 - (0.5 + 1 + 0.4 + 1 + 0.5 + 1) / 3600)
    assert c["fa_per_hour_ub95"] > c["fa_per_hour"] and c["missed"] == s["missed"]
    post = np.zeros((10, 4), np.float32)
    post[[2, 3, 4, 8], 1] = 0.9
    d = detections_from_posteriors(post, ["a", "b", "_unknown_", "_silence_"], [0, 1], 0.02, 0.5, 0.05)
    assert [x["t_s"] for x in d] == [0.06, 0.18]                                # 0.08 and 0.10 fall in the refractory


def test_bad_wavs(tmp_path):
    sr8 = 8000
    t = np.arange(sr8) / sr8
    write_wav(tmp_path / "r8k.wav", 0.3 * np.sin(2 * np.pi * 440 * t).astype(np.float32), sr8)
    x = read_wav(tmp_path / "r8k.wav")
    assert len(x) == 16000 and x.dtype == np.float32                            # resampled to 16 kHz
    st = np.stack([np.full(800, 0.5), np.full(800, -0.1)], 1)
    with wave.open(str(tmp_path / "st.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((st * 32767).astype(np.int16).tobytes())
    assert np.allclose(read_wav(tmp_path / "st.wav"), 0.2, atol=1e-3)         # down-mixed
    with wave.open(str(tmp_path / "empty.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    with pytest.raises(DataError, match="empty wav"):
        read_wav(tmp_path / "empty.wav")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00junk")
    with pytest.raises(DataError, match="unreadable wav"):
        read_wav(tmp_path / "corrupt.wav")


@pytest.fixture(scope="session")
def tiny_kws_data(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    d = tmp_path_factory.mktemp("kws") / "sc"
    make_kws_tts(d, renditions=1, unknown_per_speaker=3, silence=40, dialects=["en-us", "en-gb", "en-029"],
                 variants=["m1", "m3", "f1", "f2", "klatt", "Andy"], flite_voices=[], real_unknown=False, festival=[],
                 context_per_speaker=4, languages=["es", "pl"], language_speakers=2)
    return d


def test_calibration_streams_leave_near_miss_words_out(tiny_kws_data):
    """The calibration negatives without the built-in set's near-miss words (they are reported on their own);
    with stream.calibration_near_misses they are in."""
    from edgeft.bench.audio_data import near_miss_clips, validation_streams
    from edgeft.data import lexicon

    if not lexicon.available():
        pytest.skip("Festival's lexicons (festlex-cmu, festlex-poslex) are not installed")
    labels = KEYWORDS + ["_unknown_", "_silence_"]
    unk = [it for it in scan_speech_commands(tiny_kws_data, KEYWORDS, 25, 25).splits["val"]
           if it.label == "_unknown_"]
    near = near_miss_clips(f"{tiny_kws_data}:val", labels, 25, 25)
    assert len(near) == sum("__nm-" in it.path.name for it in unk) > 0 and all("__nm-" in n for n, _ in near)
    for keep, n in ((False, len(unk) - len(near)), (True, len(unk))):
        st = validation_streams(str(tiny_kws_data), labels, 0.2, 25, 25, max_positives=5, near_misses=keep)
        assert st["negative"]["truth"]["negative_speech"].startswith(f"{n} unknown-word clips")
        assert ("near-miss words left out" in st["negative"]["truth"]["negative_speech"]) != keep


def test_pseudo_words_are_seeded_multi_syllable_and_never_end_in_a_keyword():
    """Other-language _unknown_ speech reads pseudo-words: 2-4 open syllables (+ an optional s/l/r), the same
    for the same seed, and none ends in "no"/"go" (a keyword said after other sounds must not be _unknown_)."""
    import re

    import numpy as np

    from edgeft.data.audio import pseudo_word

    words = [pseudo_word(np.random.default_rng(7)) for _ in range(3)]
    assert len(set(words)) == 1                                  # seeded
    g = np.random.default_rng(0)
    ws = [pseudo_word(g) for _ in range(3000)]
    assert all(re.fullmatch(r"([bcdfglmnprstvz][aeiou]){2,4}[slr]?", w) for w in ws)
    assert not any(w.endswith(("no", "go")) for w in ws)
    assert any(w.startswith("no") for w in ws) and len(set(ws)) > 2500     # "nove"-like starts stay in


@needs_tts
def test_unknown_languages_are_read_natively_and_none_is_evaluated():
    """Each language of the built-in _unknown_ speech is an espeak-ng voice that reads pseudo-words by its own
    rules (no switch to English, as Vietnamese's does), and none is a language of the other-language test stream
    (French, Italian, Russian), which must stay blind."""
    import subprocess

    from edgeft.data.audio import OTHER_LANGUAGE_VOICES, UNKNOWN_LANGUAGES

    listed = {ln.split()[1] for ln in subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True,
                                                     check=True).stdout.splitlines()[1:]}
    evaluated = {v.split("_")[0] for v in OTHER_LANGUAGE_VOICES}
    assert evaluated == {"fr", "it", "ru"} and len(set(UNKNOWN_LANGUAGES)) == len(UNKNOWN_LANGUAGES) == 12
    for lang in UNKNOWN_LANGUAGES:
        assert lang in listed, lang
        assert lang.split("-")[0] not in evaluated, lang
        ph = subprocess.run(["espeak-ng", "-q", "-v", lang, "-x", "novelatu ramisoro gilbes"], capture_output=True,
                            text=True, check=True).stdout
        assert ph.strip() and "(" not in ph, (lang, ph)     # "(en)": the voice gave up on its own rules
    ph = subprocess.run(["espeak-ng", "-q", "-v", "vi", "-x", "novelatu"], capture_output=True, text=True).stdout
    assert "(en)" in ph                                      # the check can fail: Vietnamese switches


def test_speech_commands_layout_splits_and_skips(tiny_kws_data, tmp_path):
    files = scan_speech_commands(tiny_kws_data, KEYWORDS, 25, 25)
    from edgeft.data import lexicon
    if lexicon.available():     # near-miss words and 1 s cuts of phrases join _unknown_, per speaker
        man = json.loads((tiny_kws_data / "manifest.json").read_text())
        unk = sorted(p.name for p in (tiny_kws_data / "_unknown_").glob("*.wav"))
        assert man["near_miss_clips"] == 18 * 3 == sum("__nm-" in n for n in unk) and man["near_miss_words"] > 100
        assert man["phrase_clips"] == 18 * 2 == sum("__phrase_" in n for n in unk)
        assert not any(n.split("__nm-")[1][:-4].rsplit("_", 1)[0] in KEYWORDS for n in unk if "__nm-" in n)
        ctx = [p for k in KEYWORDS for p in (tiny_kws_data / k).glob("*__ctx-*.wav")]   # keywords between words
        assert man["keyword_in_context_clips"] == 18 * 4 == len(ctx)
        assert all(p.parent.name == p.name.split("__ctx-")[1].rsplit("_", 1)[0] for p in ctx)
    # other-language speech: per language 2 voices, each 2 pseudo-words alone and 3 phrase cuts, all _unknown_
    xl = sorted(p.name for p in tiny_kws_data.rglob("xl-*.wav"))
    assert len(xl) == 2 * 2 * (2 + 3) and all(p.parent.name == "_unknown_" for p in tiny_kws_data.rglob("xl-*.wav"))
    assert {n.split("-")[1] for n in xl} == {"es", "pl"} and sum("__phrase-xl_" in n for n in xl) == 12
    assert json.loads((tiny_kws_data / "manifest.json").read_text())["other_language_unknown"]["clips"] == 20
    spk = {s: {it.speaker for it in v} for s, v in files.splits.items()}
    assert not (spk["train"] & spk["test"]) and not (spk["train"] & spk["val"])      # speaker-disjoint
    assert files.classes[-2:] == ["_unknown_", "_silence_"] and len(files.noise) == 6
    d = tmp_path / "bad"
    shutil.copytree(tiny_kws_data, d)
    (d / "yes" / "zz__yes_0.wav").write_bytes(b"not a wav")
    items = [it for s in scan_speech_commands(d, KEYWORDS, 25, 25).splits.values() for it in s]
    clips, tg, _, skipped = load_clips(items, files.classes, 16000)
    assert len(skipped) == 1 and len(clips) == len(items) - 1
    with pytest.raises(DataError, match="unreadable wav"):
        load_clips(items, files.classes, 16000, strict=True)
    with pytest.raises(DataError, match=r"keyword folder\(s\) \['banana'\] missing"):
        scan_speech_commands(d, KEYWORDS + ["banana"])


@pytest.mark.slow
@needs_tts
def test_kws_finetune_export_stream_listen_bench(tiny_kws_data, tmp_path, cli, monkeypatch):
    recipe = tmp_path / "k.yaml"
    recipe.write_text(f"""
_base_: {REPO_RECIPES / '_base' / 'kws.yaml'}
model: {{name: test_tcn}}
data: {{source: {tiny_kws_data}}}
val_percent: 25
test_percent: 25
train: {{epochs: 2, batch_size: 32}}
export: {{calib_size: 32, parity_samples: 32}}
augment_audio: {{reverb_prob: 0.5, eq_prob: 0.5, rooms: 4}}
mining: {{rounds: 1, minutes: 0.5, min_score: 0.05, max_clips: 20}}
stream: {{calibration_minutes: 0.5}}
""")
    run = tmp_path / "run"
    r = cli("finetune", "--recipe", recipe, "--out", run)
    assert r.code == 0, r.err
    mined = np.load(run / "hard_negatives_0.npz")["clips"]           # mined at epoch 2 of 2, kept for --resume
    assert mined.dtype == np.int16 and mined.shape[1] == 16000 and len(mined) <= 20
    for fmt, prec in (("onnxruntime", "fp32"), ("openvino", "fp32"), ("onnxruntime", "int8")):
        r = cli("export", run, "--format", fmt, *(["--int8"] if prec == "int8" else []))
        assert r.code == 0, r.err
        m = json.loads((run / "bundles" / f"{fmt}-{prec}" / "manifest.json").read_text())
        assert m["preprocess"]["kind"] == "logmel" and m["stream"]["hop_ms"] == 20
        assert m["streaming_model"]["new_frames"] == 2 and m["parity"]["streaming"]["max_abs_diff"] < 1e-4
        cal = m["stream"]["calibration"]          # each bundle's own threshold, from the validation streams
        assert m["stream"]["threshold"] == cal["threshold"] and cal["target_fa_per_hour"] == 1.0
        within = cal["fa"] <= cal["fa_allowed"] and cal["substitutions"] <= cal["substitutions_allowed"]
        assert within or not cal["met"]
        assert "val split" in cal["stream"]["negative"] and cal["positive_keywords"] > 0
        nm = cal["near_miss_words"]               # left out of the budget, reported: how many fire at the threshold
        assert nm["clips"] > 0 and len(nm["worst"]) == min(nm["fire_at_threshold"], 8)
        assert all(float(w.rsplit(" ", 1)[1]) >= cal["threshold"] for w in nm["worst"])
    b = run / "bundles" / "onnxruntime-fp32"
    wav = next((tiny_kws_data / "yes").glob("*.wav"))
    r = cli("predict", b, wav, "--json")
    assert r.code == 0 and json.loads(r.out)[0]["top"][0]["label"] in json.loads((b / "manifest.json").read_text())["labels"]
    # a short stream, the same detections in streaming and window mode, and in real time and as fast as possible
    from edgeft import runtime
    from edgeft.runtime.kws import KwsDetector, replay

    audio = np.concatenate([read_wav(p) for p in sorted((tiny_kws_data / "yes").glob("*.wav"))[:4]])
    with runtime.load(b) as model:
        w = replay(KwsDetector(model, "window", threshold=0.3), audio)
        s = replay(KwsDetector(model, "streaming", threshold=0.3), audio)
        rt = replay(KwsDetector(model, "streaming", threshold=0.3), audio, realtime=True)
        raw = replay(KwsDetector(model, "window", smooth_ms=20), audio)["posteriors"]       # one hop: no smoothing
        p_sil = KwsDetector(model, "window").p_silence
        # a confirmation delay: the same detections in both modes, and from the scores that calibration thresholds
        wc = replay(KwsDetector(model, "window", threshold=0.3, confirm_ms=100), audio)
        sc = replay(KwsDetector(model, "streaming", threshold=0.3, confirm_ms=100), audio)
        assert KwsDetector(model, "window", confirm_ms=100).algorithmic_latency_ms()["confirm_ms"] == 100
        kw_idx = KwsDetector(model, "window", confirm_ms=0).kw_idx
        unconfirmed = replay(KwsDetector(model, "window", confirm_ms=0), audio)
    assert [(d["label"], d["t_s"]) for d in wc["detections"]] == [(d["label"], d["t_s"]) for d in sc["detections"]]
    assert [(d["label"], d["t_s"]) for d in wc["detections"]] == [
        (d["label"], round(d["t_s"], 4)) for d in detections_from_posteriors(
            wc["scores"], model.labels, kw_idx, 0.02, 0.3, 1.0)]
    assert "confirm_ms" in m["stream"] and np.array_equal(unconfirmed["scores"], unconfirmed["posteriors"])
    assert np.abs(w["posteriors"] - s["posteriors"]).max() < 1e-4
    # benchmarks/kws_threshold_sweep.py --smooth-ms re-smooths raw posteriors as the detector smooths them
    from edgeft.runtime.kws import smooth_posteriors

    assert np.abs(smooth_posteriors(raw, p_sil, 5) - w["posteriors"]).max() < 1e-5         # the bundle's 100 ms
    assert np.abs(smooth_posteriors(raw, p_sil, 5) - raw).max() > 1e-3
    # the streaming graph (front end + model + smoothing, one call per hop) in OpenVINO, its state in the plugin;
    # a smoothing window other than the bundle's (done outside the graph); two streams on one model
    with runtime.load(run / "bundles" / "openvino-fp32") as model:
        so = replay(KwsDetector(model, "streaming", threshold=0.3), audio)
        s3 = replay(KwsDetector(model, "streaming", threshold=0.3, smooth_ms=60), audio)
        w3 = replay(KwsDetector(model, "window", threshold=0.3, smooth_ms=60), audio)
        det = KwsDetector(model, "streaming", threshold=0.3)
        a, b2 = det.create_stream(), det.create_stream()
        noise = np.random.default_rng(5).standard_normal(len(audio)).astype(np.float32) * 0.3
        pa = []
        for j in range(len(audio) // det.hop):
            a.accept(audio[j * det.hop:(j + 1) * det.hop])
            b2.accept(noise[j * det.hop:(j + 1) * det.hop])
            pa.append(a.step()["posteriors"])
            b2.step()
        b2.accept(audio[:det.hop // 2])                    # half a hop: the graph takes whole hops
        with pytest.raises(UnsupportedError, match="whole hop"):
            b2.step()
    assert np.abs(so["posteriors"] - w["posteriors"]).max() < 1e-4
    assert np.abs(s3["posteriors"] - w3["posteriors"]).max() < 1e-4
    assert np.abs(s3["posteriors"] - so["posteriors"]).max() > 1e-3          # the window did change
    assert np.abs(np.array(pa) - so["posteriors"]).max() < 1e-6
    # ONNX Runtime's session (two I/O bindings in turn) = the generic one (numpy states through infer), reset included
    from edgeft.backends.base import StateSession

    with runtime.load(b) as model:
        r = model.open_streaming()
        fast, slow = r.state_session(), StateSession(r)
        assert type(fast) is not StateSession
        hop = model.streaming["hop_samples"]
        for rep in range(2):
            for j in range(12):
                x = audio[None, j * hop:(j + 1) * hop]
                assert all(np.abs(u - v).max() < 1e-6 for u, v in zip(fast.step(x), slow.step(x)))
            fast.reset()
            slow.reset()
    with runtime.load(b) as model:                  # the batched scorer (calibration) = the detector, hop by hop
        from edgeft.runtime.kws import window_posteriors

        det = KwsDetector(model, "window")
        wp = window_posteriors(lambda x: model.runner.infer({"input": x})["logits"], model.lm, model.frames, audio,
                               det.hop, det.smooth, batch=7)
    assert wp.shape == w["posteriors"].shape and np.abs(wp - w["posteriors"]).max() < 1e-5
    assert [d["t_s"] for d in rt["detections"]] == [d["t_s"] for d in s["detections"]]
    assert rt["audio_s"] == pytest.approx(len(audio) // 320 * 0.02) and rt["max_backlog_ms"] < 1000
    write_wav(tmp_path / "talk.wav", audio)
    r = cli("listen", b, "--source", tmp_path / "talk.wav", "--asfast", "--threshold", "0.3")
    assert r.code == 0 and "detection(s)" in r.out and "streaming mode" in r.out, r.err
    assert "scored against" not in r.out                                   # no truth file: nothing to score
    # a truth file beside the wav (make-stream's format): listen scores its detections against it
    ends = np.cumsum([len(read_wav(p)) / 16000 for p in sorted((tiny_kws_data / "yes").glob("*.wav"))[:4]])
    starts = np.concatenate([[0.0], ends[:-1]])
    events = [{"label": "yes", "start_s": float(a), "end_s": float(e)} for a, e in zip(starts, ends)]
    (tmp_path / "talk.json").write_text(json.dumps({"events": events}))
    r = cli("listen", b, "--source", tmp_path / "talk.wav", "--asfast", "--threshold", "0.3")
    assert r.code == 0 and "scored against talk.json" in r.out and "/4 keywords detected" in r.out, r.out
    hits = int(r.out.split("scored against talk.json: ")[1].split("/")[0])
    n_det = int(r.out.split(" detection(s)")[0].split()[-1])
    assert 0 <= hits <= min(4, n_det) and "FA/h" in r.out
    # edgeft calibrate: a threshold chosen again on the user's own streams (talk.wav with its 4 keywords, a room
    # with none). First, what it thresholds = the detector's scores (replay), stream after stream
    import edgeft.bench.kws_calibrate as kc

    write_wav(tmp_path / "room.wav", np.random.default_rng(1).standard_normal(16000 * 90).astype(np.float32) * 0.05)
    (tmp_path / "room.json").write_text('{"events": []}')
    with runtime.load(b) as model:
        det = KwsDetector(model, "window")
        room, talk = kc.read_stream(tmp_path / "room.wav", ["yes"]), kc.read_stream(tmp_path / "talk.wav", ["yes"])
        post, ev, audio_s = kc.stream_scores(model, det, [room, talk])
        s_room, s_talk = replay(det, room["audio"])["scores"], replay(det, talk["audio"])["scores"]
    off = len(post) - len(s_talk) - len(s_room)         # the gap between the streams, once after each
    assert off == 2 * (int(np.ceil(max(det.refractory_s, 1.0) / 0.02)) + 1)
    assert not post[len(s_room):len(s_room) + off // 2].any()
    assert np.abs(post[:len(s_room)] - s_room).max() < 1e-5
    assert np.abs(post[len(s_room) + off // 2:len(s_room) + off // 2 + len(s_talk)] - s_talk).max() < 1e-5
    shift, cut = (len(s_room) + off // 2) * 0.02, len(s_talk) * 0.02    # the last keyword ends with its audio: cut
    assert [e["label"] for e in ev] == [e["label"] for e in talk["truth"]["events"]]
    assert [t for e in ev for t in (e["start_s"], e["end_s"])] == pytest.approx(
        [t + shift for e in talk["truth"]["events"] for t in (e["start_s"], min(e["end_s"], cut))])
    assert audio_s == pytest.approx((len(s_room) + len(s_talk)) * 0.02)
    # refused, the bundle left as it was: too little audio without keywords, no keyword, truth files that are not,
    # labels that are not keywords
    exported = (b / "manifest.json").read_bytes()
    (tmp_path / "bad.json").write_text('{"events": [')
    (tmp_path / "str.json").write_text('{"events": [{"label": "yes", "start_s": "0.5", "end_s": 1}]}')
    (tmp_path / "odd.json").write_text('{"events": [{"label": "banana", "start_s": 0, "end_s": 1}]}')
    for n in ("bad", "str", "odd"):
        write_wav(tmp_path / f"{n}.wav", np.zeros(16000, np.float32))
    for streams, needle in (([tmp_path / "talk.wav"], "s of audio without keywords; calibration needs at least 60"),
                            ([tmp_path / "room.wav"], "no keyword event"), ([tmp_path / "nope.wav"], "does not exist"),
                            ([tmp_path / "bad.wav"], "not a truth file"), ([tmp_path / "str.wav"], "must be a list"),
                            ([tmp_path / "odd.wav"], "['banana'] are not keywords")):
        r = cli("calibrate", b, *[a for x in streams for a in ("--stream", x)])
        assert r.code == 2 and needle in r.err and r.err.count("\n") == 1, (needle, r.err)
    real_choose = kc.choose_threshold               # a budget no threshold detects a keyword within: refused
    monkeypatch.setattr(kc, "choose_threshold", lambda *a, **k: {**real_choose(*a, **k), "frr": 1.0})
    r = cli("calibrate", b, "--stream", tmp_path / "talk.wav", "--stream", tmp_path / "room.wav")
    assert r.code == 2 and "none of the 4 keywords is detected" in r.err and r.err.count("\n") == 1, r.err
    assert (b / "manifest.json").read_bytes() == exported
    monkeypatch.undo()

    # Stored: this 2-epoch model detects nothing on its own, so each keyword said is made clear in its real scores
    # ("yes" 0.9 over its last 0.38 s); the room's scores stay the model's
    def clear_keywords(model, det, streams):
        post, ev, audio_s = real_scores(model, det, streams)
        post, yes = post.copy(), model.labels.index("yes")
        for e in ev:
            j = int(round(e["end_s"] / 0.02))
            post[j - 20:j] = 0.1 / (len(model.labels) - 1)
            post[j - 20:j, yes] = 0.9
        return post, ev, audio_s

    real_scores = kc.stream_scores
    monkeypatch.setattr(kc, "stream_scores", clear_keywords)
    r = cli("calibrate", b, "--stream", tmp_path / "talk.wav", "--stream", tmp_path / "room.wav",
            "--target-fa-per-hour", "10")
    assert r.code == 0, r.err
    m_before, m = json.loads(exported), json.loads((b / "manifest.json").read_text())
    cal = m["stream"]["calibration"]
    assert cal["by"] == "edgeft calibrate" and cal["streams"] == ["talk.wav", "room.wav"] and cal["keywords"] == 4
    assert cal["previous"] == {"threshold": m_before["stream"]["threshold"], "by": "edgeft export", "signed_by": None}
    assert m["stream"]["threshold"] == cal["threshold"] and m["files"] == m_before["files"]   # model files as they were
    assert f"-> {cal['threshold']}" in r.out and cal["target_fa_per_hour"] == 10 and cal["frr"] < 1 and cal["met"]
    assert f"Next: edgeft listen {b} --source {tmp_path / 'talk.wav'} --asfast" in r.out     # runnable as printed
    assert cal["fa"] <= cal["fa_allowed"] == 0 and cal["negative_hours"] * 3600 > 60      # 90 s room: no false accept
    with runtime.load(b) as model:                                      # what the detector now uses
        assert KwsDetector(model, "window").threshold == cal["threshold"]
    # a signed bundle: refused without its key (its signature would break) or with another key; signed again with it
    assert cli("keygen", "--out", tmp_path / "k").code == 0 and cli("keygen", "--out", tmp_path / "k2").code == 0
    sb = tmp_path / "signed"
    shutil.copytree(b, sb)
    assert cli("sign", sb, "--key", tmp_path / "k").code == 0
    signed = (sb / "manifest.json").read_bytes()
    args = ("calibrate", sb, "--stream", tmp_path / "talk.wav", "--stream", tmp_path / "room.wav",
            "--target-fa-per-hour", "10")
    for extra, needle in (((), "is signed"), (("--sign-key", tmp_path / "k2"), "is another key")):
        r = cli(*args, *extra)
        assert r.code == 2 and needle in r.err and r.err.count("\n") == 1, r.err
    assert (sb / "manifest.json").read_bytes() == signed
    r = cli(*args, "--sign-key", tmp_path / "k")
    assert r.code == 0, r.err
    monkeypatch.undo()
    with runtime.load(sb, trust=[tmp_path / "k.pub"]) as model:         # the new signature verifies
        cal = model.manifest["stream"]["calibration"]
        assert cal["by"] == "edgeft calibrate" and cal["previous"]["signed_by"] == \
            json.loads(signed)["integrity"]["signature"]["key_id"]
    (tmp_path / "talk.json").write_text("{\"events\": 3}")
    r = cli("listen", b, "--source", tmp_path / "talk.wav", "--asfast")
    assert r.code == 2 and "not a truth file" in r.err and r.err.count("\n") == 1, r.err
    (tmp_path / "talk.json").unlink()
    r = cli("bench", b, run / "bundles" / "onnxruntime-int8", "--scenario", "audio_stream", "--profile", "smoke",
            "--data", f"{tiny_kws_data}:test", "--threads", 1, "--out", tmp_path / "bench")
    assert r.code == 0, r.err
    r = cli("bench", b, "--profile", "smoke", "--data", f"{tiny_kws_data}:dev")
    assert r.code == 2 and "unknown split 'dev'" in r.err and r.err.count("\n") == 1, r.err
    doc = json.loads((tmp_path / "bench" / "result.json").read_text())
    names = [a["name"] for a in doc["artifacts"]]
    assert any(n.endswith("/streaming") for n in names) and any(n.endswith("/window") for n in names)
    for a in doc["artifacts"]:
        au = a["audio"]
        assert au["positives"] > 0 and au["negative_hours"] > 0 and au["rtf_wall"] > 0 and au["rtf_cpu"] > 0
        assert au["realtime_asfast_match"] and len(au["roc"]) >= 5 and au["chunk_latency"]["count"] > 0
        assert au["frr_ci95"][0] <= au["frr"] <= au["frr_ci95"][1]
        op = au["frr_at_1fa_h"]     # a smoke stream has minutes of negative audio: 1 FA/h is not resolvable
        assert op["target_fa_per_hour"] == 1.0 and op["resolvable"] is False and op["thresholds_swept"] == 66
        assert op["frr"] is None or (0 <= op["frr"] <= 1 and op["fa"] == 0)
        rk = au["real_keywords"]                     # real human keywords (sentences + said alone), when installed
        if rk is not None:
            t = rk["at_threshold"]
            assert t["events"] > 0 and 0 <= t["detected"] <= t["events"] and t["threshold"] == au["threshold"]
            assert sum(int(v.split("/")[1]) for v in t["by_label"].values()) == t["events"]
        nm = au["near_miss_words"]                   # the test split's near-miss words, said alone
        from edgeft.data import lexicon
        if lexicon.available():
            n_test = sum(1 for it in scan_speech_commands(tiny_kws_data, KEYWORDS, 10, 10).splits["test"]
                         if "__nm-" in it.path.name)
            assert nm["clips"] == n_test > 0 and len(nm["worst"]) == min(nm["fire_at_threshold"], 8)
            assert nm["fire_at_threshold"] <= nm["clips"]
            assert ("fire_at_frr10" in nm) == (au["fa_at_frr10"].get("threshold") is not None)   # FRR 10% reachable
    assert "FRR @1 FA/h" in (tmp_path / "bench" / "result.md").read_text()
    assert "near-miss words firing" in (tmp_path / "bench" / "result.md").read_text()
    # the same prune and QAT stages work for keyword spotting (one code path)
    r = cli("prune", run, "--ratio", "0.25", "--round-to", "1", "--epochs", "1", "--out", tmp_path / "p")
    assert r.code == 0, r.err
    r = cli("qat", tmp_path / "p", "--epochs", "0", "--calib-size", "32", "--out", tmp_path / "q")
    assert r.code == 0, r.err
    r = cli("export", tmp_path / "q", "--format", "openvino", "--int8", "--out", tmp_path / "qb")
    assert r.code == 0, r.err
    qm = json.loads((tmp_path / "qb" / "manifest.json").read_text())
    assert qm["quantization"]["method"] == "qat" and qm["source"]["pruned"]["ratio"] == 0.25
    # bad input
    r = cli("listen", b, "--source", tmp_path / "nope.wav")
    assert r.code == 2 and ("does not exist" in r.err or "unreadable wav" in r.err), r.err
    for opt, val, needle in (("--threshold", "1.5", "valid is 0 < t < 1"), ("--mode", "fast", "valid are window"),
                             ("--seconds", "0", "Invalid value for '--seconds'")):
        r = cli("listen", b, "--source", tmp_path / "talk.wav", "--asfast", opt, val)
        assert r.code == 2 and needle in r.err and r.err.count("\n") == 1, (opt, r.err)
    r = cli("bench", b, "--scenario", "camera", "--data", f"{tiny_kws_data}:test")
    assert r.code == 2 and "needs image classification" in r.err


def test_real_human_speech_reads_through_the_front_end():
    from edgeft.data.audio import klettres_keywords, real_speech_files

    files = real_speech_files()
    if not files:
        pytest.skip("pocketsphinx-testdata not installed")
    x = read_wav(files[0])
    assert len(x) > 16000 and LogMel().frames_from(x).shape[0] == 40
    kl = klettres_keywords()
    if kl:
        audio, label, src = kl[0]
        assert label in KEYWORDS and len(audio) > 1000


def test_hedgewars_voice_actors_give_real_keywords_and_unknowns(tmp_path, monkeypatch):
    """An English pack's "Nooo" becomes "no" clips (its first second); other packs and lines are only _unknown_
    (capped per actor); a line with a keyword inside ("yes sir", "come on then") is neither."""
    import subprocess

    from edgeft.data import audio

    if shutil.which("sox") is None:
        pytest.skip("sox not installed")
    root = tmp_path / "voices"
    t = np.arange(16000 * 2) / 16000
    tone = lambda f, s: (0.5 * np.sin(2 * np.pi * f * t[:int(16000 * s)])).astype(np.float32)  # noqa: E731
    for pack in ("Pirate", "Default_pl"):
        for stem, x in (("Nooo", np.concatenate([tone(300, 1.2), tone(900, 0.6)])), ("Yessir", tone(400, 0.6)),
                        ("Comeonthen", tone(500, 0.7)), ("Enemydown", tone(200, 0.9)), ("Oops", tone(600, 0.4)),
                        ("Hello", tone(700, 0.4)), ("Laugh", tone(800, 0.5))):
            (root / pack).mkdir(parents=True, exist_ok=True)
            write_wav(tmp_path / "x.wav", x)
            subprocess.run(["sox", str(tmp_path / "x.wav"), "-r", "44100", str(root / pack / f"{stem}.ogg")], check=True)
    monkeypatch.setattr(audio, "HEDGEWARS", root)
    once = audio.decode_with_sox(root / "Pirate" / "Oops.ogg")       # repeatable: sox's dither is off
    assert np.array_equal(once, audio.decode_with_sox(root / "Pirate" / "Oops.ogg"))
    out = audio.import_hedgewars(tmp_path / "set" / "_real_unknown_", keyword_dst=tmp_path / "set", per_speaker=2,
                                 renditions=3)
    assert out == {"unknown": 4, "keywords": 3}
    unk = sorted(p.name for p in (tmp_path / "set" / "_real_unknown_").iterdir())
    assert {audio.speaker_of(n) for n in unk} == {"hw-pirate", "hw-default_pl"}
    assert not any(w in n for n in unk for w in ("nooo", "yessir", "enemydown", "comeonthen"))
    # the English pack only (the Polish pack says it in Polish); "yes sir" and "enemy down" are not trained on
    assert sorted(p.relative_to(tmp_path / "set").as_posix() for p in (tmp_path / "set").rglob("*.wav")
                  if p.parent.name != "_real_unknown_") == [f"no/hw-pirate__no_{r}.wav" for r in range(3)]
    x = read_wav(tmp_path / "set" / "no" / "hw-pirate__no_0.wav")     # the first second: the 300 Hz part
    spec = np.abs(np.fft.rfft(x))
    assert abs(int(np.argmax(spec)) * 16000 / len(x) - 300) < 20


def test_other_language_speech_is_a_long_negative_stream_traced_by_recording(tiny_kws_data, tmp_path, monkeypatch):
    """Asterisk prompts of the held-out voices decoded 8 -> 16 kHz once (cached); silence/ and the Spanish Allison
    (the English Allison is in training) left out; the stream holds every recording once, with no event, and its
    segments say which recording is where."""
    import subprocess

    from edgeft.bench.audio_data import other_language_stream
    from edgeft.data import audio

    if shutil.which("sox") is None:
        pytest.skip("sox not installed")
    monkeypatch.setenv("EDGEFT_CACHE", str(tmp_path / "cache"))
    t = np.arange(16000) / 16000   # 1 s, written at 16 kHz, stored as the packages do: 8 kHz
    for rel, f in (("fr_CA_f_June/vm-intro.wav", 300), ("fr_CA_f_June/digits/1.wav", 500),
                   ("fr_CA_f_June/silence/1.wav", 0), ("ru_RU_f_IvrvoiceRU/vm-goodbye.wav", 700),
                   ("es_MX_f_Allison/vm-intro.wav", 900)):
        (tmp_path / "ast" / rel).parent.mkdir(parents=True, exist_ok=True)
        write_wav(tmp_path / "x.wav", (0.4 * np.sin(2 * np.pi * f * t)).astype(np.float32))
        subprocess.run(["sox", str(tmp_path / "x.wav"), "-r", "8000", str(tmp_path / "ast" / rel)], check=True)
    files = audio.other_language_speech_files(tmp_path / "ast")
    assert [f.name for f in files] == ["asterisk-fr_CA_f_June-digits-1.wav", "asterisk-fr_CA_f_June-vm-intro.wav",
                                       "asterisk-ru_RU_f_IvrvoiceRU-vm-goodbye.wav"]
    x = read_wav(files[0])
    assert abs(len(x) - 16000) < 50 and abs(int(np.argmax(np.abs(np.fft.rfft(x)))) - 500) < 5   # 16 kHz, 500 Hz
    assert audio.other_language_speech_files(tmp_path / "ast") == files       # cached: built once
    assert audio.other_language_speech_files(tmp_path / "none") == []
    labels = KEYWORDS + ["_unknown_", "_silence_"]
    st = other_language_stream(str(tiny_kws_data), labels, tmp_path / "st", seed=3, val_pct=25, test_pct=25,
                               files=files)
    truth = json.loads((tmp_path / "st" / "stream_negative_other_languages.json").read_text())
    assert truth["events"] == [] and sorted(s["file"] for s in truth["segments"]) == [f.name for f in files]
    segs = sorted(truth["segments"], key=lambda s: s["start_s"])
    assert all(a["end_s"] < b["start_s"] for a, b in zip(segs, segs[1:]))
    assert truth["length_sec"] == pytest.approx(len(st["audio"]) / 16000, abs=1e-3)
    assert truth["length_sec"] > segs[-1]["end_s"]
    a = st["audio"]
    loud = lambda s: float(np.sqrt(np.mean(a[int(s["start_s"] * 16000):int(s["end_s"] * 16000)] ** 2)))  # noqa: E731
    gap = a[int(segs[0]["end_s"] * 16000) + 800:int(segs[1]["start_s"] * 16000) - 800]
    assert min(loud(s) for s in segs) > 1.5 * float(np.sqrt(np.mean(gap ** 2)))   # speech where the segments say (10 dB SNR)


def test_threshold_sweep_without_the_other_language_prompts_stops_with_one_line(monkeypatch, capsys, tmp_path):
    """benchmarks/kws_threshold_sweep.py --other-languages on a machine without the Asterisk prompts: one line that
    names the packages to install, exit 2, before any bundle is replayed or stream built."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "kws_threshold_sweep", REPO_RECIPES.parent / "benchmarks" / "kws_threshold_sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    monkeypatch.setattr(sweep, "other_language_speech_files", lambda: [])
    monkeypatch.setenv("EDGEFT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as e:
        sweep.streams(str(tmp_path / "no-such-data"), KEYWORDS + ["_unknown_", "_silence_"], 1234, True)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: --other-languages:")
    assert "asterisk-core-sounds-fr-wav" in err and "asterisk-prompt-it-menardi-wav" in err
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("opt,ms,valid", [("--smooth-ms", "0", "0 < MS <= 2000"),
                                          ("--smooth-ms", "-20", "0 < MS <= 2000"),
                                          ("--smooth-ms", "5000", "0 < MS <= 2000"),
                                          ("--confirm-ms", "-20", "0 <= MS <= 2000"),
                                          ("--confirm-ms", "5000", "0 <= MS <= 2000")])
def test_threshold_sweep_smoothing_and_confirmation_are_checked(tmp_path, opt, ms, valid):
    """--smooth-ms takes durations 0 < MS <= 2000, --confirm-ms delays 0 <= MS <= 2000: argparse's one error line
    naming the values, exit 2, before any bundle is opened or stream built."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "EDGEFT_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, str(REPO_RECIPES.parent / "benchmarks" / "kws_threshold_sweep.py"),
                        str(tmp_path / "no-bundle"), opt, "100", ms],
                       capture_output=True, text=True, env=env, timeout=120)
    err = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert r.returncode == 2 and r.stdout == "" and len(err) == 1 and f"{opt} 100 {float(ms):g}" in err[0]
    assert valid in err[0] and "Traceback" not in r.stderr and not (tmp_path / "cache").exists()


def _sweep_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "kws_threshold_sweep", REPO_RECIPES.parent / "benchmarks" / "kws_threshold_sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    return sweep


def test_threshold_sweep_reports_the_frr_at_one_false_accept_per_hour(capsys):
    """The sweep's DET point at 1 FA/h on both real-speech streams (2 h here: at most 2 false accepts): the
    lowest threshold of the dense grid that allows no more, and the positive FRR there; and --ensemble's mean of
    raw posteriors. Synthetic posteriors with known peaks, so the expected point is computed by hand."""
    from types import SimpleNamespace

    sweep = _sweep_module()
    labels, kw, hop = ["yes", "no", "_unknown_", "_silence_"], [0, 1], 0.02

    def stream(seconds, peaks, label=0):        # one peak of `label` per 5 s, held 10 hops, else silence
        p = np.zeros((int(seconds / hop), 4), np.float32)
        p[:, 3] = 1.0
        events = []
        for i, v in enumerate(peaks):
            j = int((5 + 5 * i) / hop)
            p[j:j + 10] = 0.0
            p[j:j + 10, label], p[j:j + 10, 2] = v, 1 - v
            events.append({"label": labels[label], "start_s": 5 + 5 * i - 0.8, "end_s": 5 + 5 * i + 0.1})
        return p, events

    pos, ev = stream(60, [0.3 + 0.07 * i for i in range(10)])       # 0.30 ... 0.93: five of them below 0.6
    real, _ = stream(3600, [0.5, 0.6, 0.7], label=1)                  # "no" fired on real speech
    other, _ = stream(3600, [0.55, 0.65])
    s = {"positive": {"truth": {"events": ev, "length_sec": 60.0}},
         "negative_real": {"truth": {"events": [], "length_sec": 3600.0}},
         sweep.OTHER: {"truth": {"events": [], "length_sec": 3600.0, "segments": []}}}
    post = {"positive": pos, "negative_real": real, sweep.OTHER: other}
    rows = sweep._report("b", SimpleNamespace(threshold=0.5), labels, s, post, hop, 1.0, kw)
    out = capsys.readouterr().out
    # 5 false accepts >= 0.5; at most 2 from the first grid point above 0.6 (0.605), where 0.30-0.58 are missed
    assert "- FRR at 1 FA/h on both real-speech streams (at most 2 false accepts in 2.00 h): 0.500 at threshold " \
           "0.605" in out
    assert rows[0].endswith("| 0.500 (0.605) |")
    # what the bundle ships, at its own threshold (0.5): 7 of 10 keywords, 3 + 2 false accepts in 2 h
    assert "- at the bundle's own (calibrated) threshold 0.500: FRR 0.300, 5 false accepts in 2.00 h = 2.50/h" in out
    sweep._report("b", SimpleNamespace(threshold=0.5), labels, s, post, hop, 1.0, kw, own=False)
    assert "own (calibrated)" not in capsys.readouterr().out
    t, frr, allowed = sweep.frr_at_one_fa_per_hour(lambda t: 0.1, lambda t: 9, 2.59)
    assert (t, frr, allowed) == (None, None, 2)
    # --ensemble: the mean of two bundles' raw posteriors, and the mean posterior of silence
    raw, p_sil = sweep.mean_posteriors([{"a": pos}, {"a": 1 - pos}], [np.eye(4)[3], np.eye(4)[2]])
    assert np.allclose(raw["a"], 0.5) and np.allclose(p_sil, [0, 0, 0.5, 0.5])
    with pytest.raises(ValueError, match="differ in shape"):
        sweep.mean_posteriors([{"a": pos}, {"a": pos[:-1]}], [np.eye(4)[3]] * 2)


def test_threshold_sweep_ensemble_needs_two_bundles(tmp_path):
    """--ensemble with one bundle has nothing to average: argparse's one error line, exit 2, before any bundle is
    opened or stream built."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "EDGEFT_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, str(REPO_RECIPES.parent / "benchmarks" / "kws_threshold_sweep.py"),
                        str(tmp_path / "no-bundle"), "--ensemble"], capture_output=True, text=True, env=env,
                       timeout=120)
    err = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert r.returncode == 2 and r.stdout == "" and len(err) == 1 and "--ensemble" in err[0]
    assert "two or more bundles" in err[0] and "Traceback" not in r.stderr and not (tmp_path / "cache").exists()


def test_threshold_sweep_ensemble_of_other_keywords_stops_before_replaying(monkeypatch, capsys):
    """--ensemble of bundles with other labels (or another hop) cannot be averaged: one error line naming the
    bundle, exit 2, checked on the manifests before any stream is built or replayed."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    sweep = _sweep_module()
    models = {"a": SimpleNamespace(labels=["yes", "no", "_unknown_", "_silence_"]),
              "b": SimpleNamespace(labels=["up", "down", "_unknown_", "_silence_"])}
    monkeypatch.setattr(sweep.runtime, "load", lambda b, threads=1: nullcontext(models[b]))
    monkeypatch.setattr(sweep, "KwsDetector", lambda m, mode: SimpleNamespace(hop_ms=20.0))
    monkeypatch.setattr(sweep, "streams", lambda *a, **k: pytest.fail("streams built before the check"))
    with pytest.raises(SystemExit) as e:
        sweep.main(["a", "b"], "speech-commands-tts:test", 1234, False, ensemble=True)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: --ensemble: b has other labels")


def test_threshold_sweep_positives_must_exceed_the_dev_profile(tmp_path):
    """--positives N at or below the dev profile's 200 keywords would add nothing: argparse's error, exit 2, before
    any bundle is opened or stream built."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "EDGEFT_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, str(REPO_RECIPES.parent / "benchmarks" / "kws_threshold_sweep.py"),
                        str(tmp_path / "no-bundle"), "--other-languages", "--positives", "200"],
                       capture_output=True, text=True, env=env, timeout=120)
    err = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert r.returncode == 2 and r.stdout == "" and len(err) == 1 and "--positives 200" in err[0]
    assert "Traceback" not in r.stderr and not (tmp_path / "cache").exists()


def test_per_keyword_threshold_benchmark_needs_exported_runs(tmp_path):
    """A folder that is not a finetune run with an exported onnxruntime-fp32 bundle: argparse's one error line
    naming it and the export command, exit 2, no stream built."""
    import os
    import subprocess
    import sys

    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("task: kws\n")       # a run, but nothing exported
    env = {**os.environ, "EDGEFT_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, str(REPO_RECIPES.parent / "benchmarks" / "kws_per_keyword_thresholds.py"),
                        str(run)], capture_output=True, text=True, env=env, timeout=120)
    err = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert r.returncode == 2 and r.stdout == "" and len(err) == 1 and str(run) in err[0]
    assert "edgeft export" in err[0] and "Traceback" not in r.stderr and not (tmp_path / "cache").exists()


def test_real_voices_benchmark_without_recordings_says_what_to_install(monkeypatch, capsys):
    """No real keyword recording installed: one error line naming the packages, exit 2 (as the sweep's twin check),
    after the bundles opened and before any clip is decoded."""
    import importlib.util
    from contextlib import nullcontext
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("kws_real_voices",
                                                  REPO_RECIPES.parent / "benchmarks" / "kws_real_voices.py")
    rv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rv)
    opened = []
    monkeypatch.setattr(rv.runtime, "load", lambda b, threads=1: opened.append(b) or nullcontext(SimpleNamespace()))
    monkeypatch.setattr(rv, "clips", lambda: [])
    monkeypatch.setattr(rv, "decode_with_sox", lambda p: pytest.fail("a clip decoded"))
    with pytest.raises(SystemExit) as e:
        rv.main(["a", "b"])
    out, err = capsys.readouterr()
    assert e.value.code == 2 and opened == ["a", "b"] and out == "" and err.count("\n") == 1
    assert err.startswith("error: no real keyword recording is installed") and "klettres-data" in err


def test_near_miss_words_and_phrases_from_the_lexicons():
    """Negatives one phoneme from a keyword, never a homophone or a word that begins with a keyword."""
    import numpy as np

    from edgeft.data import lexicon

    if not lexicon.available():
        pytest.skip("festlex-cmu / festlex-poslex not installed")
    c = lexicon.confusables(KEYWORDS)
    assert {"light", "bright", "ride"} <= set(c["right"]) and {"town", "done"} <= set(c["down"])
    every = {w for ws in c.values() for w in ws}
    assert not every & {"write", "rite", "know", "rights", "stops", "going", "upper", *KEYWORDS}
    assert lexicon.sounds_like_keyword("going", KEYWORDS) and lexicon.sounds_like_keyword("Write", KEYWORDS)
    assert not lexicon.sounds_like_keyword("light", KEYWORDS)
    common = lexicon.common_words(KEYWORDS, 500)
    assert len(common) == 500 and "the" in common and not set(common) & {"up", "on", "no", "know", "going"}
    ph = lexicon.phrase(np.random.default_rng(0), common, sorted(every))
    assert 3 <= len(ph.split()) <= 6 and len(set(ph.split()) & every) >= 1
    assert lexicon.phrase(np.random.default_rng(0), common, sorted(every)) == ph      # seeded


def test_keyword_prefixed_words_go_on_for_a_syllable():
    """Words that begin with a keyword's whole pronunciation and add a syllable ("nobody", "going"), never the
    keyword, a homophone or an inflection without a new syllable ("stops", "goes")."""
    from edgeft.data import lexicon

    if not lexicon.available():
        pytest.skip("festlex-cmu / festlex-poslex not installed")
    p = lexicon.keyword_prefixed(KEYWORDS)
    assert {"nobody", "notice"} & set(p["no"]) and "going" in p["go"] and "upper" in p["up"]
    assert "yesterday" in p["yes"] and "offer" in p["off"] and "stopping" in p["stop"]
    every = {w for ws in p.values() for w in ws}
    assert not every & {"stops", "goes", "know", "write", "rights", "downs", "nose", *KEYWORDS}
    pr = lexicon.pronunciations()
    for k, ws in p.items():
        for w in ws:
            assert any(len(a) > len(q) and a[:len(q)] == q and lexicon.VOWELS & set(a[len(q):])
                       for a in pr[w] for q in pr[k]), (k, w)


@needs_tts
def test_keyword_prefixed_negatives_in_the_built_in_set(tmp_path):
    """With prefixed_per_speaker / language_prefixed, English speakers say keyword-prefixed words and the other
    languages' speakers pseudo-words that begin like a keyword, all _unknown_ and named like near-miss words."""
    from edgeft.data import lexicon
    from edgeft.data.audio import KEYWORD_ONSETS, near_miss_word, prefixed_pseudo_word

    g = np.random.default_rng(3)
    ws = [prefixed_pseudo_word(g) for _ in range(500)]
    assert prefixed_pseudo_word(np.random.default_rng(3)) == ws[0]                                  # seeded
    assert {next(o for o in KEYWORD_ONSETS.values() if w.startswith(o)) for w in ws} == set(KEYWORD_ONSETS.values())
    assert all(len(w) > len(o) + 1 for w in ws for o in KEYWORD_ONSETS.values() if w.startswith(o))
    d = make_kws_tts(tmp_path / "sc", renditions=1, unknown_per_speaker=1, silence=2, dialects=["en-us"],
                     variants=["m1"], flite_voices=[], real_unknown=False, festival=[], phrases_per_speaker=0,
                     languages=["es"], language_speakers=1, language_words=1, language_phrases=0,
                     prefixed_per_speaker=2, language_prefixed=3)
    unk = sorted((d / "_unknown_").glob("*__nm-*.wav"))
    en = {near_miss_word(f) for f in unk if f.name.startswith("es-en-us-m1__")}
    xl = {near_miss_word(f) for f in unk if f.name.startswith("xl-es-")}
    every = {w for ws in lexicon.keyword_prefixed(KEYWORDS).values() for w in ws} if lexicon.available() else set()
    assert len(en & every) == (2 if every else 0) and len(xl) == 3
    assert all(w.startswith(tuple(KEYWORD_ONSETS.values())) for w in xl)
    m = json.loads((d / "manifest.json").read_text())["keyword_prefixed"]
    assert m["per_english_speaker"] == 2 and m["per_other_language_speaker"] == 3 and set(m["words"]) == every


def test_keyword_in_context_cut_ends_just_after_the_keyword():
    from edgeft.data.audio import SR, _in_context

    kw = np.linspace(-1, 1, int(0.4 * SR)).astype(np.float32)      # the keyword: a ramp; other words: flat

    def synth(text):
        return kw if text == "left" else np.full(int(0.3 * SR * len(text.split())), 0.5, np.float32)

    for seed in range(5):
        x = _in_context(synth, ["the market", "left", "in the"], np.random.default_rng(seed))
        ramp = np.flatnonzero((np.abs(x) < 0.99) & (x != 0))            # the keyword (words: 1, pauses: 0)
        assert len(x) == SR and len(ramp) > 0.35 * SR
        assert 0.15 * SR - 2 <= SR - 1 - ramp[-1] <= 0.45 * SR + 2      # the cut ends 0.15-0.45 s after it
    x = _in_context(synth, ["a", "left", ""], np.random.default_rng(0))  # short: zeros before
    assert len(x) == SR and x[0] == 0.0


def test_real_test_speech_split_by_transcript():
    """Only recordings whose transcript says no keyword are negatives; those that say one are real positives."""
    from edgeft.data.audio import (KEYWORDS, make_stream, real_speech_transcripts, split_real_speech,
                                   words_of_text)

    sp = split_real_speech(KEYWORDS)
    if not sp["negative"]:
        pytest.skip("pocketsphinx-testdata / warzone2100-data not installed")
    tr = real_speech_transcripts()
    assert tr["sense_and_sensibility_01_austen_64kb-0880.wav"] == "he was not an ill disposed young man"
    for f in sp["negative"]:
        assert tr[f.name] and not set(words_of_text(tr[f.name])) & set(KEYWORDS)
    assert all(tr.get(f.name) is None or set(words_of_text(tr[f.name])) & {"download", "offered"}
               for f in sp["unverified"])
    said = {f.name: w for f, w in sp["keyword"]}
    if "warzone-audio-tutorial-tut23.wav" in said:          # "Now left click the machinegun artifact"
        assert said["warzone-audio-tutorial-tut23.wav"] == ["left"]
    import numpy as np
    one = np.ones(1600, np.float32)
    _, ev = make_stream([(one, ["left", "on"]), (one, "no")], [], [], 20.0, seed=0, gap_s=(1.0, 1.5))
    assert [e["label"] for e in ev[:3]] == ["left", "on", "no"] and ev[0]["start_s"] == ev[1]["start_s"]


def test_frr_at_one_false_accept_per_hour_from_the_det_curve():
    """The operating point for 1 FA/h: the lowest FRR among swept thresholds whose FA/h is at most 1, with whether
    the negative audio can resolve that rate at all."""
    import numpy as np

    from edgeft.bench.kws_scoring import frr_at_fa

    hop = 0.02
    labels, kw = ["_silence_", "_unknown_", "yes"], [2]
    pos = np.zeros((3000, 3), np.float32)           # 60 s: two keywords, detected at 0.9 right after they end
    truth = {"events": [{"label": "yes", "start_s": 10.0, "end_s": 10.5}, {"label": "yes", "start_s": 30.0,
                                                                           "end_s": 30.5}], "length_sec": 60.0}
    for t in (10.6, 30.6):
        pos[int(t / hop)] = [0, 0.1, 0.9]
    neg = np.zeros((int(7200 / hop), 3), np.float32)   # 2 h of negative audio: three 0.6 peaks and one 0.8
    for t, v in ((100, 0.6), (2000, 0.6), (4000, 0.6), (6000, 0.8)):
        neg[int(t / hop)] = [0, 1 - v, v]
    r = frr_at_fa(pos, neg, truth, 7200.0, labels, kw, hop, 1.0, target_fa_per_hour=1.0)
    assert r["resolvable"] and r["frr"] == 0.0
    assert 0.6 < r["threshold"] <= 0.8 and r["fa"] == 1 and r["fa_per_hour"] <= 1.0   # one 0.8 peak in ~2 h
    r = frr_at_fa(pos, neg, truth, 7200.0, labels, kw, hop, 1.0, target_fa_per_hour=0.1)   # no false accept
    assert r["threshold"] > 0.8 and r["fa"] == 0 and r["frr"] == 0.0
    short = neg[: int(360 / hop)]                                          # 6 minutes: 1 FA/h is not resolvable
    r = frr_at_fa(pos, short, truth, 360.0, labels, kw, hop, 1.0, target_fa_per_hour=1.0)
    assert not r["resolvable"] and "zero false accepts" in r["note"] and r["fa"] == 0
    pos_weak = pos * 0.5                                                   # keywords peak at 0.45 < every threshold
    r = frr_at_fa(pos_weak, neg, truth, 7200.0, labels, kw, hop, 1.0, target_fa_per_hour=1.0,
                  thresholds=[0.5, 0.7, 0.9])
    assert r["frr"] == 1.0


def _toy_det_curve():
    hop = 0.02
    labels, kw = ["_silence_", "_unknown_", "yes"], [2]
    truth = {"events": [{"label": "yes", "start_s": 10.0 + 5 * i, "end_s": 10.5 + 5 * i} for i in range(10)],
             "length_sec": 70.0}
    pos = np.zeros((int(70 / hop), 3), np.float32)       # ten keywords scoring 0.55, 0.6, ... 1.0
    for i in range(10):
        v = 0.55 + 0.05 * i
        pos[int((10.6 + 5 * i) / hop)] = [0, 1 - v, v]
    neg = np.zeros((int(3600 / hop), 3), np.float32)     # 1 h of negative audio: peaks 0.5 x3, 0.62, 0.75
    for t, v in ((100, 0.5), (900, 0.5), (1500, 0.5), (2000, 0.62), (3000, 0.75)):
        neg[int(t / hop)] = [0, 1 - v, v]
    return pos, neg, truth, labels, kw, hop


def test_fa_at_frr_and_threshold_calibration():
    """FA/h at FRR <= 10% is the highest threshold keeping 9 of 10 keywords; calibration picks the lowest threshold
    whose false accepts fit the budget (target x negative hours, at least 'none')."""
    from edgeft.bench.kws_scoring import choose_threshold, fa_at_frr

    pos, neg, truth, labels, kw, hop = _toy_det_curve()
    r = fa_at_frr(pos, neg, truth, 3600.0, labels, kw, hop, 1.0, max_frr=0.10)
    assert r["frr"] <= 0.10 and 0.55 < r["threshold"] <= 0.6 and r["fa"] == 2      # 0.62 and 0.75 still fire
    assert r["fa_per_hour_ub95"] > r["fa_per_hour"] > 0
    r = fa_at_frr(pos, neg, truth, 3600.0, labels, kw, hop, 1.0, max_frr=0.5)
    assert r["fa"] == 0 and r["frr"] == 0.5                 # keep 5 of 10: above 0.75, no false accept
    c = choose_threshold(pos, neg, truth, 3600.0, labels, kw, hop, 1.0, target_fa_per_hour=1.0)
    assert c["met"] and c["fa_allowed"] == 1 and c["fa"] == 1 and 0.62 < c["threshold"] <= 0.75
    c = choose_threshold(pos, neg[: int(900 / hop)], truth, 900.0, labels, kw, hop, 1.0, target_fa_per_hour=1.0)
    assert c["fa_allowed"] == 0 and c["fa"] == 0 and 0.5 < c["threshold"] <= 0.55   # 15 min: no false accept


def test_calibration_budgets_substitutions_per_keyword_not_per_hour():
    """A wrong keyword fired while a keyword is said is a substitution: it is budgeted per keyword said
    (max_substitution_rate), apart from the false accepts per hour of non-keyword audio, which it would otherwise
    dominate (a validation stream has minutes of gaps between its keywords)."""
    from edgeft.bench.kws_scoring import choose_threshold

    pos, neg, truth, labels, kw, hop = _toy_det_curve()
    labels, kw = labels + ["no"], kw + [3]
    pos, neg = np.pad(pos, ((0, 0), (0, 1))), np.pad(neg, ((0, 0), (0, 1)))
    pos[int(10.0 / hop)] = [0, 0.1, 0, 0.9]         # "no" scores 0.9 while the first "yes" (0.55, at 10.6 s) is said
    c = choose_threshold(pos, neg, truth, 3600.0, labels, kw, hop, 0.5, max_substitution_rate=0.1)
    assert c["met"] and (c["substitutions_allowed"], c["substitutions"], c["fa_allowed"], c["fa"]) == (1, 1, 1, 1)
    assert 0.62 < c["threshold"] <= 0.75 and c["keywords"] == 10     # as without the substitution
    c = choose_threshold(pos, neg, truth, 3600.0, labels, kw, hop, 0.5, max_substitution_rate=0.0)
    assert c["met"] and (c["substitutions_allowed"], c["substitutions"], c["fa"]) == (0, 0, 0) and c["threshold"] > 0.9
    c = choose_threshold(pos, neg, truth, 3600.0, labels, kw, hop, 0.5, max_substitution_rate=0.0,
                         thresholds=[0.5, 0.8])
    assert not c["met"] and c["threshold"] == 0.8 and "1 substitutions" in c["note"]


def test_max_substitution_rate_out_of_range_is_one_clear_error(tmp_path, cli):
    from edgeft.errors import RecipeError
    from edgeft.recipe import load_recipe

    assert load_recipe(REPO_RECIPES / "kws" / "dscnn_s.yaml",
                       ["stream.max_substitution_rate=0.05"]).stream.max_substitution_rate == 0.05
    with pytest.raises(RecipeError, match="stream.max_substitution_rate"):
        load_recipe(REPO_RECIPES / "kws" / "dscnn_s.yaml", ["stream.max_substitution_rate=2"])
    r = cli("finetune", "--recipe", "kws/dscnn_s", "--out", tmp_path / "run",
            "--set", "stream.max_substitution_rate=-1")
    assert r.code == 2 and "stream.max_substitution_rate" in r.err and r.err.count("\n") == 1, r.err
    assert not (tmp_path / "run").exists()


def test_clip_peaks_keeps_each_clip_to_itself():
    """Near-miss words are scored said alone: each clip's peak is its own, never a loud neighbour's (the gap
    outlasts a window), and the keyword it peaked on is reported."""
    from edgeft.bench.kws_scoring import clip_peaks

    hop, win = 320, 16000

    def post_of(a):             # a fake detector: keyword k's score = loudest sample in the last 1 s window
        hops = len(a) // hop
        m = np.array([np.abs(a[max(0, (j + 1) * hop - win):(j + 1) * hop]).max() for j in range(hops)])
        return np.stack([0.1 * m, m, 0.5 * m], 1)

    amps = [0.9, 0.05, 0.7, 0.3]
    clips = [np.full(8000, v, np.float32) for v in amps]
    peaks = clip_peaks(post_of, clips, [1, 2], hop)
    assert [round(p, 6) for p, _ in peaks] == amps and {k for _, k in peaks} == {1}
    short = clip_peaks(post_of, clips, [1, 2], hop, gap=4000)   # a gap shorter than a window: neighbours leak
    assert short[1][0] > 0.05


def test_vtlp_moves_formants_and_keeps_nyquist():
    """Vocal tract length perturbation: a 1 kHz tone's peak moves to alpha x 1 kHz, alpha 1 changes nothing,
    and the top of the spectrum stays in place."""
    from edgeft.tasks.kws.task import torch_logmel, vtlp_warp

    sr, n = 16000, 512
    x = torch.tensor(np.sin(2 * np.pi * 1000 * np.arange(sr) / sr), dtype=torch.float32)[None].repeat(3, 1)
    p = torch.fft.rfft(x.unfold(-1, n, 160) * torch.hann_window(n), n=n).abs() ** 2
    out = vtlp_warp(p, torch.tensor([1.0, 1.1, 0.9]), sr)
    f = np.fft.rfftfreq(n, 1 / sr)
    assert torch.equal(out[0], p[0]) and [abs(f[int(out[i, 5].argmax())] - 1000 * a) <= 16
                                         for i, a in ((1, 1.1), (2, 0.9))] == [True, True]
    assert torch.allclose(out[1:, :, -1], p[1:, :, -1])
    lm = LogMel()
    assert torch.equal(torch_logmel(x, lm), torch_logmel(x, lm, torch.ones(3)))


def test_mfcc_features_match_torchaudio_dct_and_stream():
    import torchaudio

    from edgeft.runtime.features import dct_matrix
    from edgeft.tasks.kws.task import torch_logmel

    assert np.abs(torchaudio.functional.create_dct(10, 40, norm="ortho").numpy() - dct_matrix(10, 40)).max() < 1e-6
    lm = LogMel(win=480, hop=320, n_fft=512, f_max=4000, n_mfcc=10)           # MLPerf Tiny: 49 x 10
    x = (np.random.default_rng(3).standard_normal(16000) * 0.1).astype(np.float32)
    f = lm.clip_features(x)
    assert f.shape == (10, 49) and lm.spec()["kind"] == "mfcc" and LogMel.from_spec(lm.spec()) == lm
    assert np.abs(torch_logmel(torch.from_numpy(x)[None], lm)[0].numpy() - f).max() < 1e-4
    mel = LogMel(win=480, hop=320, n_fft=512, f_max=4000).clip_features(x)
    assert np.abs(mel.T @ dct_matrix(10, 40) - f.T).max() < 1e-3
    s = StreamingLogMel(lm)
    assert np.abs(np.concatenate([s.accept(x[i:i + 320]) for i in range(0, 16000, 320)], 1) - f).max() < 1e-5
    assert lm.silence_column().shape == (10, 1)


def test_room_and_microphone_augmentation(tmp_path, monkeypatch):
    """Reverberation spreads a click's energy over time, the microphone response cuts high frequencies, and the
    clip's level is kept; a small seeded bank of simulated rooms is cached."""
    pytest.importorskip("pyroomacoustics")
    from edgeft.data.rir import rir_bank
    from edgeft.tasks.kws.recipe import AudioAugmentCfg
    from edgeft.tasks.kws.task import room_and_mic

    monkeypatch.setenv("EDGEFT_CACHE", str(tmp_path))
    bank = rir_bank(n=3, rt60=(0.4, 0.6))
    assert len(bank) == 3 and all(np.argmax(np.abs(h)) == 0 and abs(np.sum(h ** 2) - 1) < 1e-4 for h in bank)
    assert len(list((tmp_path / "rir").glob("*.npz"))) == 1 and np.allclose(rir_bank(n=3, rt60=(0.4, 0.6))[0], bank[0])
    x = torch.zeros(4, 16000)
    x[:, 2000:2040] = 0.5                                   # a 2.5 ms click
    g = torch.Generator().manual_seed(0)
    y = room_and_mic(x, AudioAugmentCfg(reverb_prob=1.0, rt60_s=(0.4, 0.6), rooms=3), LogMel(), g)
    tail = lambda z: float(z[:, 4000:].pow(2).sum())        # noqa: E731  energy 125 ms after the click
    assert tail(y) > 100 * tail(x) + 1e-3 and torch.allclose(y.pow(2).mean(1), x.pow(2).mean(1), rtol=1e-3)
    n = torch.randn(8, 16000, generator=torch.Generator().manual_seed(1)) * 0.1
    e = room_and_mic(n, AudioAugmentCfg(eq_prob=1.0), LogMel(), g)
    hi = lambda z: float(torch.fft.rfft(z).abs()[:, 7000:].pow(2).mean())  # noqa: E731  above 7 kHz
    assert hi(e) < 0.8 * hi(n)
    same = room_and_mic(n, AudioAugmentCfg(), LogMel(), g)
    assert same is n                                        # both off: untouched


def test_hard_negative_mining_picks_the_windows_that_fire():
    """A model that fires on loud audio: mining returns its highest-scoring windows, 1 s apart, above min_score."""
    from edgeft.tasks.kws.recipe import KwsRecipe
    from edgeft.tasks.kws.task import KwsSplit, mine_hard_negatives

    classes = KEYWORDS + ["_unknown_", "_silence_"]

    class Loud(torch.nn.Module):
        def forward(self, x):                               # keyword "yes" logit grows with the window's energy
            e = x.flatten(1).mean(1)
            out = torch.zeros(len(x), len(classes))
            out[:, 0] = (e + 8) * 3
            return out

    rng = np.random.default_rng(0)
    clips = (rng.standard_normal((20, 16000)) * 0.2 * 32767 / 4).astype(np.int16)
    split = KwsSplit(clips, np.full(20, classes.index("_unknown_")), ["s"] * 20)
    r = KwsRecipe.model_validate({"task": "kws", "model": {"name": "test_kws"}, "mining": {"rounds": 1, "minutes": 0.5, "min_score": 0.2,
                                                            "max_clips": 5}})
    got, meta = mine_hard_negatives(Loud(), split, classes, r, [], "cpu", seed=0)
    assert 1 <= len(got) <= 5 and got.shape[1] == 16000 and got.dtype == np.int16 and meta["max_score"] > 0.2
    assert meta["minutes"] == pytest.approx(0.5, abs=0.05)


def _speech_commands_folder(src, dst):
    """The tiny TTS set rewritten in Speech Commands v0.02's published layout: one folder per word,
    <speaker-hash>_nohash_<n>.wav, _background_noise_/, validation_list.txt and testing_list.txt, no _silence_."""
    import hashlib

    from edgeft.data.audio import which_split

    lists = {"val": [], "test": []}
    for f in sorted(src.rglob("*.wav")):
        if f.parent.name == "_background_noise_":
            (dst / "_background_noise_").mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dst / "_background_noise_" / f.name)
            continue
        if f.parent.name == "_silence_":
            continue
        spk, rest = f.stem.split("__")
        word, r = rest.rsplit("_", 1)
        if f.parent.name != "_unknown_":      # a keyword, alone or said between other words ("ctx-left_0")
            word, r = f.parent.name, ("c" if rest.startswith("ctx-") else "") + r
        name = f"{hashlib.sha1(spk.encode()).hexdigest()[:8]}_nohash_{r}.wav"
        (dst / word).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dst / word / name)
        s = which_split(spk, 25, 25)
        if s in lists:
            lists[s].append(f"{word}/{name}")
    (dst / "validation_list.txt").write_text("\n".join(lists["val"]) + "\n")
    (dst / "testing_list.txt").write_text("\n".join(lists["test"]) + "\n")
    return lists


@pytest.mark.slow
@needs_tts
def test_speech_commands_mlperf_recipe_on_a_tiny_folder(tiny_kws_data, tmp_path, cli):
    """The MLPerf Tiny recipe on a folder laid out like speech_commands_v0.02: the lists decide the splits,
    _unknown_ is cut to 10% and _silence_ cut from the noise files to 10%, features are 49 x 10 MFCCs, and the
    exported bundle (with its calibrated threshold) runs through the torch-free runtime."""
    sc = tmp_path / "speech_commands_v0.02"
    lists = _speech_commands_folder(tiny_kws_data, sc)
    run = tmp_path / "run"
    r = cli("finetune", "--recipe", "kws/speech_commands_mlperf", "--data", sc, "--out", run, "--epochs", "1",
            "--set", "stream.calibration_minutes=0.5", "--set", "train.batch_size=32")
    assert r.code == 0, r.err
    split = json.loads((run / "split.json").read_text())
    assert split["split"] == "lists"
    m = json.loads((run / "metrics.json").read_text())
    cm = np.asarray(m["confusion_matrix"])                 # test split: rows = true class
    per_class = cm.sum(1)
    assert per_class[:10].sum() == sum(1 for f in lists["test"] if f.split("/")[0] in KEYWORDS)   # the list's clips
    assert per_class[-1] > 0 and abs(per_class[-1] / per_class.sum() - 0.10) < 0.04     # _silence_ ~10%
    assert per_class[-2] / per_class.sum() <= 0.11                                      # _unknown_ <= ~10%
    r = cli("export", run, "--format", "onnxruntime")
    assert r.code == 0, r.err
    b = run / "bundles" / "onnxruntime-fp32"
    man = json.loads((b / "manifest.json").read_text())
    assert man["preprocess"]["kind"] == "mfcc" and man["inputs"][0]["shape"][1:] == [1, 10, 49]
    cal = man["stream"]["calibration"]
    assert 0 < man["stream"]["threshold"] < 1 and cal["target_fa_per_hour"] == 1.0 and cal["positive_keywords"] > 0
    wav = next((sc / "yes").glob("*.wav"))
    r = cli("predict", b, wav, "--json")
    assert r.code == 0 and json.loads(r.out)[0]["top"][0]["label"] in man["labels"]
    r = cli("finetune", "--recipe", "kws/speech_commands_mlperf", "--out", tmp_path / "r2", "--epochs", "1",
            "--data", tmp_path / "missing")
    assert r.code == 2 and "does not exist" in r.err and r.err.count("\n") == 1, r.err


def test_bad_kws_recipe_values_are_one_line_errors(cli, tmp_path):
    for key, val, needle in (("features.n_mfcc", "50", "n_mfcc (50) exceeds n_mels (40)"),
                             ("features.win_ms", "50", "is longer than n_fft"),
                             ("stream.target_fa_per_hour", "0", "greater than 0"),
                             ("augment_audio.reverb_prob", "2", "less than or equal to 1"),
                             ("mining.rounds", "-1", "greater than or equal to 0"),
                             ("unknown_percent", "100", "less than 100"),
                             ("silence_percent", "-5", "greater than or equal to 0"),
                             ("stream.calibration_minutes", "0", "greater than 0"),
                             ("stream.calibration_near_misses", "sometimes", "valid boolean"),
                             ("augment_audio.vtlp", "[1.2,0.8]", "0.5 <= low <= high <= 2")):
        r = cli("finetune", "--recipe", "kws/dscnn_s", "--out", tmp_path / "r", "--set", f"{key}={val}")
        assert r.code == 2 and needle in r.err and r.err.count("\n") == 1, (key, r.err)
    assert not (tmp_path / "r").exists()


def test_make_kws_refuses_a_folder_it_did_not_make(cli, tmp_path):
    """`data make-kws --out DIR` replaces its folder: a folder with someone else's files is refused, untouched."""
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    r = cli("data", "make-kws", "--out", d)
    assert r.code == 2 and "other files in it" in r.err and r.err.count("\n") == 1, r.err
    assert (d / "notes.txt").read_text() == "keep me" and not (tmp_path / "mine.partial").exists()


def test_real_voices_benchmark_names_a_missing_bundle_in_one_line(tmp_path):
    """benchmarks/kws_real_voices.py with a folder that is no bundle: argparse's one error line naming it, exit 2,
    nothing on stdout (no clip is decoded); --help works."""
    import subprocess
    import sys

    script = str(REPO_RECIPES.parent / "benchmarks" / "kws_real_voices.py")
    r = subprocess.run([sys.executable, script, str(tmp_path / "no-bundle")], capture_output=True, text=True,
                       timeout=120)
    err = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert r.returncode == 2 and r.stdout == "" and len(err) == 1 and "no-bundle" in err[0]
    assert "edgeft export" in err[0] and "Traceback" not in r.stderr
    h = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, timeout=120)
    assert h.returncode == 0 and "BUNDLE" in h.stdout
