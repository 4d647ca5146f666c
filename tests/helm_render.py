"""Renders and lints a Helm chart with Helm's own library (PyPI's helm-python-sdk, which wraps
Helm 4's Go code; no helm binary, no cluster), for tests/tests/deploy.rs.

    python3 tests/helm_render.py <chart dir> <release> <namespace> '<values as JSON>'

Prints {"manifests": {template path: rendered YAML}, "lint": {"messages": [...], "errors": [...]}}.
"""

import json
import sys

try:
    from helm_python import chart
except ImportError:
    sys.exit(
        "helm-python-sdk is missing: `cargo xtask test` installs it "
        "(or: python3 -m pip install helm-python-sdk)"
    )


def main() -> None:
    path, release, namespace, values = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    values = json.loads(values)
    with chart.Chart.load(path) as loaded:
        manifests = loaded.render(
            values=values, name=release, namespace=namespace, is_install=True
        )
    report = chart.lint(path, values=values, strict=True, namespace=namespace)
    json.dump({"manifests": manifests, "lint": report}, sys.stdout)


if __name__ == "__main__":
    main()
