#!/usr/bin/env bash
# Set up edgeft in ./.venv (idempotent; re-running only installs what changed).
#   scripts/setup.sh          workstation install: edgeft[full] (train + export + runtimes + camera)
#   scripts/setup.sh --dev    the same plus the test tools (edgeft[dev])
# System packages (offline data and tools) are installed with apt-get when run as root; otherwise the
# script says what is missing and edgeft falls back where it can (e.g. digits instead of Fashion-MNIST).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="full"
[[ "${1:-}" == "--dev" ]] && EXTRAS="dev"

say() { printf '[setup] %s\n' "$*" >&2; }

# ---- system packages: real offline data + TTS for the keyword-spotting set + a C++ compiler for NNCF
#      + OpenSSH (bench on a device; the tests run a real sshd on 127.0.0.1)
APT_PKGS=(dataset-fashion-mnist espeak-ng flite festival festlex-cmu festlex-poslex festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox pocketsphinx-testdata
          klettres-data asterisk-core-sounds-en-wav ktuberling-data hedgewars-data codec2-examples warzone2100-data megaglest-data g++
          openssh-client
          openssh-server)
missing=()
[[ -d /usr/share/datasets/fashion-mnist ]] || missing+=(dataset-fashion-mnist)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
command -v flite >/dev/null || missing+=(flite)
command -v text2wave >/dev/null || missing+=(festival)
[[ -d /usr/share/festival/voices/us/cmu_us_slt_arctic_hts ]] || missing+=(festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts)
# Festival's CMU pronouncing dictionary + WSJ lexicon: near-miss words and phrases as keyword-spotting negatives
[[ -f /usr/share/festival/dicts/cmu/cmudict-0.4.out && -f /usr/share/festival/dicts/wsj.wp39.poslexR ]] || \
    missing+=(festlex-cmu festlex-poslex)
command -v sox >/dev/null || missing+=(sox)
[[ -d /usr/share/pocketsphinx/test/data ]] || missing+=(pocketsphinx-testdata)
[[ -d /usr/share/klettres ]] || missing+=(klettres-data)
# real human speech: training negatives (asterisk prompts, ktuberling words) and test-only streams (codec2, warzone)
[[ -d /usr/share/asterisk/sounds/en_US_f_Allison ]] || missing+=(asterisk-core-sounds-en-wav)
[[ -d /usr/share/ktuberling/sounds ]] || missing+=(ktuberling-data)
[[ -d /usr/share/games/hedgewars/Data/Sounds/voices ]] || missing+=(hedgewars-data)   # voice actors: real keywords
[[ -d /usr/share/codec2/wav ]] || missing+=(codec2-examples)
[[ -f /usr/share/games/warzone2100/base.wz ]] || missing+=(warzone2100-data)
[[ -d /usr/share/games/megaglest/tilesets ]] || missing+=(megaglest-data)   # real ambience (background noise)
command -v g++ >/dev/null || missing+=(g++)
command -v ssh >/dev/null || missing+=(openssh-client)        # edgeft bench --device ssh://...
[[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)          # the tests' device on 127.0.0.1
if ((${#missing[@]})); then
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    say "apt-get install ${missing[*]}"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}") >/dev/null \
      || say "apt-get failed; continuing without: ${missing[*]}"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    say "sudo apt-get install ${missing[*]}"
    (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}") >/dev/null \
      || say "apt-get failed; continuing without: ${missing[*]}"
  else
    say "not root: please install ${missing[*]} (e.g. sudo apt-get install ${missing[*]});"
    say "without them edgeft uses scikit-learn's digits instead of Fashion-MNIST and skips the speech data."
  fi
fi

# ---- Python environment
PY=""
for cand in python3.11 python3.12 python3.10 python3; do
  if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(not ((3,10) <= sys.version_info[:2] <= (3,12)))'; then
    PY=$cand; break
  fi
done
[[ -n "$PY" ]] || { say "error: need Python 3.10-3.12 (found: $(python3 --version 2>&1))"; exit 2; }
[[ -x .venv/bin/python ]] || { say "creating .venv with $PY"; "$PY" -m venv .venv; }
STAMP=".venv/.edgeft-setup-$EXTRAS"
WANT=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] && .venv/bin/python -c 'import edgeft' 2>/dev/null; then
  say ".venv is up to date (edgeft[$EXTRAS])"
else
  say "installing edgeft[$EXTRAS] into .venv (first time: ~2 min, ~6 GB: torch ships CUDA libraries)"
  start=$(date +%s)
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
  echo "$WANT" > "$STAMP"
  say "installed in $(( $(date +%s) - start )) s"
fi
.venv/bin/edgeft --version >&2
