#!/usr/bin/env bash
# Lints template.yaml and examples/provider-api/template.yaml (the provider's sample API that
# tollgate meters from its access log) with cfn-lint, template.yaml with checkov (security
# checks; every accepted finding is suppressed in template.yaml with its reason, so any failure
# is new), then both with the SAM CLI's `sam validate` (the SAM transform itself) and
# `sam validate --lint`. The tools come from PyPI into .tools/venv on first use (cfn-lint ~20 s;
# checkov and aws-sam-cli ~1-3 min more); TOLLGATE_CHECKOV=0 skips checkov, TOLLGATE_SAM=0 the
# SAM CLI. All of it runs offline without AWS credentials. Exit status: non-zero on any error or
# failed check.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.tools/venv"
templates=("$root/template.yaml" "$root/examples/provider-api/template.yaml")

if [ ! -x "$venv/bin/cfn-lint" ]; then
    echo "installing cfn-lint into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check cfn-lint
fi
checkov="$root/.tools/checkov/bin/checkov"
if [ "${TOLLGATE_CHECKOV:-1}" = 1 ] && [ ! -x "$checkov" ]; then
    echo "checkov is missing: run scripts/setup.sh (it installs the pinned version)" >&2
    exit 1
fi
if [ "${TOLLGATE_SAM:-1}" = 1 ] && [ ! -x "$venv/bin/sam" ]; then
    echo "installing aws-sam-cli into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check aws-sam-cli
fi

echo "cfn-lint $("$venv/bin/cfn-lint" --version | awk '{print $2}')"
for template in "${templates[@]}"; do
    name="${template#"$root"/}"
    echo "cfn-lint on $name"
    # Errors fail the build; warnings print and do not (cfn-lint exits 4 for warnings only,
    # 8 for informational messages, 2 for errors; the codes are OR-ed).
    set +e
    "$venv/bin/cfn-lint" --format parseable "$template"
    status=$?
    set -e
    if [ $((status & 2)) -ne 0 ] || [ $((status & 1)) -ne 0 ]; then
        echo "cfn-lint: errors in $name" >&2
        exit 1
    fi
    echo "cfn-lint: no errors in $name"
done

if [ "${TOLLGATE_CHECKOV:-1}" = 1 ]; then
    # --skip-download: no call to Prisma Cloud (offline; no severities or guideline links).
    echo "checkov $("$checkov" --version) on template.yaml"
    if ! "$checkov" --file "$root/template.yaml" --framework cloudformation \
        --skip-download --compact --quiet; then
        echo "checkov: failed checks in template.yaml (fix them, or suppress an accepted one" \
            "in the resource's Metadata.checkov.skip with a one-line reason)" >&2
        exit 1
    fi
    echo "checkov: no failed checks"
fi

if [ "${TOLLGATE_SAM:-1}" = 1 ]; then
    # A region is all `sam validate` needs offline. The two modes catch different mistakes:
    # the plain one runs the SAM transform (event sources, policies), --lint runs cfn-lint's
    # rules on the transformed template.
    export SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
    for template in "${templates[@]}"; do
        "$venv/bin/sam" validate --template-file "$template" --region "$AWS_DEFAULT_REGION"
        "$venv/bin/sam" validate --lint --template-file "$template" --region "$AWS_DEFAULT_REGION"
    done
fi
