#!/usr/bin/env bash
# The commands of examples/ci/github-actions.yml (and gitlab-ci.yml), in one script: the
# workflow's steps only call it, and pydeploy's test suite runs this same script against
# a local registry, so the two cannot drift. Copy it next to the workflow (GitHub:
# .github/pydeploy-ci.sh; GitLab: .gitlab/pydeploy-ci.sh).
#
#   pydeploy-ci.sh install      install pydeploy ($PYDEPLOY_REQUIREMENT)
#   pydeploy-ci.sh list         print the services to build (pydeploy-list.json); under
#                               GitHub Actions also set the step outputs `matrix` and `count`
#   pydeploy-ci.sh build NAME   build (and with PYDEPLOY_PUSH=1 push) one service; writes
#                               build-NAME.json (pydeploy's --metadata-file)
#   pydeploy-ci.sh verify DIR   check that every digest in DIR/build-*.json is what the
#                               registry serves for its tag (needs skopeo and jq)
#   pydeploy-ci.sh gitlab-pipeline  print GitLab's child pipeline for pydeploy-list.json
#
# Every value comes from the environment, never from text pasted into a command:
#   WORKSPACE               the uv workspace root (default: .)
#   PYDEPLOY_REQUIREMENT    what `install` installs (default: pydeploy==0.1.*)
#   PYDEPLOY_REGISTRY       prefix for image names, e.g. ghcr.io/my-org (lowercased: image
#                           repositories are lowercase only, GitHub owner names are not)
#   PYDEPLOY_TAGS           tags, separated by spaces (default: each service's configured tags)
#   PYDEPLOY_CHANGED_SINCE  git ref: list only the services changed since it (default: all)
#   PYDEPLOY_PUSH           1: push every tag
#   PYDEPLOY_CACHE_REPO     REGISTRY/REPO of the shared registry build cache: read with
#                           --cache-from, and written with --cache-to when pushing
#                           (empty: no registry cache)
#   PYDEPLOY_INSECURE_REGISTRIES  registries `verify` reads over plain HTTP, as pydeploy does
#                           (loopback ones always)
#   SOURCE_DATE_EPOCH       image timestamps (default: the commit time, so every runner
#                           builds the same commit to the same digests)
set -euo pipefail

die() {
	echo "pydeploy-ci: $*" >&2
	exit 2
}

workspace="${WORKSPACE:-.}"

# --registry and --tag, the same for `list` and `build`: the listed references are the
# pushed ones.
naming=()
if [ -n "${PYDEPLOY_REGISTRY:-}" ]; then
	naming+=(--registry "${PYDEPLOY_REGISTRY,,}")
fi
read -r -a tags <<<"${PYDEPLOY_TAGS:-}"
for tag in "${tags[@]}"; do
	naming+=(--tag "$tag")
done

cmd_install() {
	python -m pip install "${PYDEPLOY_REQUIREMENT:-pydeploy==0.1.*}"
}

cmd_list() {
	local args=(build --all "$workspace" --list --json "${naming[@]}")
	if [ -n "${PYDEPLOY_CHANGED_SINCE:-}" ]; then
		args+=(--changed-since "$PYDEPLOY_CHANGED_SINCE")
	fi
	pydeploy "${args[@]}" >pydeploy-list.json
	local count
	count="$(jq '.include | length' pydeploy-list.json)"
	if [ -n "${GITHUB_OUTPUT:-}" ]; then
		# One line each: `matrix` is the whole document, `count` lets the build job be
		# skipped when nothing is selected (a matrix without entries fails the workflow).
		{
			printf 'matrix=%s\n' "$(jq -c . pydeploy-list.json)"
			printf 'count=%s\n' "$count"
		} >>"$GITHUB_OUTPUT"
	fi
	echo "pydeploy-ci: $count service(s) to build" >&2
	cat pydeploy-list.json
}

# GitLab: a child pipeline (JSON is YAML) with one build job per listed service and a
# verify job, from pydeploy-list.json. The jobs extend the templates of
# .gitlab/pydeploy-jobs.yml; values are written as data by jq, never as shell text.
cmd_gitlab_pipeline() {
	[ -f pydeploy-list.json ] || die "gitlab-pipeline: run \`list\` first (no pydeploy-list.json)"
	jq --arg push "${PYDEPLOY_PUSH:-}" '
		[.include[].name] as $names
		| {"include": [{"local": ".gitlab/pydeploy-jobs.yml"}]}
		+ if ($names | length) == 0 then
			# A pipeline needs a job: this one says that nothing is built.
			{"nothing-to-build": {"extends": ".pydeploy-nothing"}}
		else
			([$names[] | {key: "build-\(.)", value: {"extends": ".pydeploy-build",
				"variables": {"PYDEPLOY_SERVICE": ., "PYDEPLOY_PUSH": $push}}}]
				| from_entries)
			+ (if $push == "1" then {"verify": {"extends": ".pydeploy-verify",
				"needs": [$names[] | "build-\(.)"]}} else {} end)
		end' pydeploy-list.json
}

cmd_build() {
	local name="${1:-}"
	# A member name as `list` prints it (PEP 503 normal form); it also names a file.
	[[ "$name" =~ ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$ ]] || die "build: not a service name: '$name'"
	if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
		SOURCE_DATE_EPOCH="$(git -C "$workspace" log -1 --format=%ct 2>/dev/null || true)"
		if [ -n "$SOURCE_DATE_EPOCH" ]; then
			export SOURCE_DATE_EPOCH
		fi
	fi
	local args=(build --all "$workspace" --only "$name" --metadata-file "build-$name.json"
		"${naming[@]}")
	if [ "${PYDEPLOY_PUSH:-}" = 1 ]; then
		args+=(--push)
	fi
	if [ -n "${PYDEPLOY_CACHE_REPO:-}" ]; then
		args+=(--cache-from "$PYDEPLOY_CACHE_REPO")
		if [ "${PYDEPLOY_PUSH:-}" = 1 ]; then
			args+=(--cache-to "$PYDEPLOY_CACHE_REPO")
		fi
	fi
	pydeploy "${args[@]}"
}

# skopeo's TLS flag for a reference: plain HTTP where pydeploy uses it, for loopback
# registries and those in PYDEPLOY_INSECURE_REGISTRIES (comma-separated host[:port]).
tls_flag() {
	local registry="${1%%/*}" entry insecure
	case "$registry" in
	localhost | localhost:* | 127.* | "[::1]" | "[::1]:"*)
		echo --tls-verify=false
		return
		;;
	esac
	IFS=, read -r -a insecure <<<"${PYDEPLOY_INSECURE_REGISTRIES:-}"
	for entry in "${insecure[@]}"; do
		entry="${entry// /}"
		if [ -n "$entry" ] && { [ "$entry" = "$registry" ] || [ "$entry" = "${registry%:*}" ]; }; then
			echo --tls-verify=false
			return
		fi
	done
	echo --tls-verify=true
}

cmd_verify() {
	local dir="${1:-}"
	[ -d "$dir" ] || die "verify: no directory '$dir'"
	shopt -s nullglob
	local files=("$dir"/build-*.json)
	[ "${#files[@]}" -gt 0 ] || die "verify: no build-*.json in $dir"
	local file ref digest served checked=0
	for file in "${files[@]}"; do
		jq -e '.ok and all(.services[]; .result.pushed != {})' "$file" >/dev/null ||
			die "verify: $file records a failed service or one that pushed nothing"
		while read -r ref digest; do
			# The manifest bytes the registry serves for the tag, hashed: their digest is
			# the one a pull by that tag resolves to.
			served="sha256:$(skopeo inspect --raw "$(tls_flag "$ref")" "docker://$ref" </dev/null |
				sha256sum | cut -d' ' -f1)"
			if [ "$served" != "$digest" ]; then
				echo "pydeploy-ci: $ref: the registry serves $served, $file says $digest" >&2
				exit 1
			fi
			echo "pydeploy-ci: ok $ref $digest" >&2
			checked=$((checked + 1))
		done < <(jq -r '.services[].result.pushed | to_entries[] | "\(.key) \(.value)"' "$file")
	done
	echo "pydeploy-ci: $checked tag(s) in ${#files[@]} file(s) verified" >&2
}

command="${1:-}"
shift || true
case "$command" in
install) cmd_install ;;
list) cmd_list ;;
build) cmd_build "$@" ;;
verify) cmd_verify "$@" ;;
gitlab-pipeline) cmd_gitlab_pipeline ;;
*) die "usage: pydeploy-ci.sh install | list | build NAME | verify DIR | gitlab-pipeline" ;;
esac
