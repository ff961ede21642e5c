#!/usr/bin/env bash
# A study's runs in the background, as the results/ READMEs say they are made: every command of QUEUE
# (one a line; # comments) runs in a git worktree at COMMIT, the study's code, one at a time and at
# nice 19, so that tests and benchmarks beside it keep their speed; each run that a command has scored
# (an eval_*.json beside its result.json, under the worktree's results/) is copied into this checkout
# and committed here, one commit a run, its scores in the message. Stopped at any moment, it resumes:
# run it again (studies/sweep.py skips completed runs and resumes the others from their checkpoints).
# QUEUE is read when it starts: to change it, stop it and start it again.
#
#   nohup bash studies/background.sh a6a8170 queue.txt DATA_DIR > background.log 2>&1 &
#
# DATA_DIR holds the prepared data folders (data/pydocs, ...) that the worktree's data/ links to; the
# worktree is ../study-COMMIT beside this checkout. Commands run from the worktree's root with this
# checkout's .venv first on the PATH and this shell's environment otherwise: offline, export
# TIKTOKEN_CACHE_DIR before starting it, or the scoring (tools/evaluate.py counts bytes with the tokenizer) fails.
set -u
[ $# -eq 3 ] || { echo "usage: bash studies/background.sh COMMIT QUEUE DATA_DIR" >&2; exit 2; }
main=$(git rev-parse --show-toplevel) || exit 1
commit=$(git rev-parse --verify "$1^{commit}") || { echo "background.sh: no commit $1" >&2; exit 1; }
queue=$(realpath "$2") && data=$(realpath "$3") || exit 1
worktree="$main/../study-${commit:0:7}"
[ -d "$worktree" ] || git worktree add --detach "$worktree" "$commit" || exit 1
[ "$(git -C "$worktree" rev-parse HEAD)" = "$commit" ] || { echo "background.sh: $worktree is not at $commit" >&2; exit 1; }
[ -e "$worktree/data" ] || ln -s "$data" "$worktree/data"
export PATH="$main/.venv/bin:$PATH"

commit_scored_runs() {
  (cd "$worktree" && find results -name 'eval_*.json' 2>/dev/null | sort) | while read -r scores; do
    run=$(dirname "$scores")
    cmp -s "$worktree/$scores" "$main/$scores" && cmp -s "$worktree/$run/result.json" "$main/$run/result.json" && continue
    mkdir -p "$main/$run" && cp "$worktree/$run/result.json" "$worktree/$scores" "$main/$run/"
    message=$(cd "$main" && python - "$run" "$scores" <<'EOF'
import json, sys
run, scores = sys.argv[1], json.load(open(sys.argv[2]))
code = json.load(open(f"{run}/result.json")).get("code") or [{}]
blends = "".join(f", {v:.4f} at α={a}" for a, v in scores.get("blends", {}).items() if a not in ("0", "1"))
print(f"{run}: scored, made at {code[0].get('commit', 'unknown')[:7]} ({scores['part']} half, {scores['tokens']:,} "
      f"tokens, {scores['bytes']:,} bytes: {scores['returned']:.4f} returned model, {scores['last']:.4f} last iterate{blends})")
EOF
)
    (cd "$main" && git add "$run/result.json" "$scores" && git commit -q -m "$message" -- "$run/result.json" "$scores")
  done
}

grep -v '^\s*\(#\|$\)' "$queue" | while read -r command; do
  echo "$(date -u '+%F %T') $command"
  (cd "$worktree" && nice -n 19 bash -c "$command" < /dev/null) &
  while kill -0 $! 2>/dev/null; do sleep 60; commit_scored_runs; done
  wait $!
  echo "$(date -u '+%F %T') exit status $?"
  commit_scored_runs
done
