"""Every vendor payload shape the integrations are tested with, posted to the service; prints the table.

    python bench/integration_shapes.py [--model-path models/current] [--fixtures tests/serving/fixtures]

Each fixture of the manifest (tests/serving/fixtures/shapes.json: file, vendor, shape and the
settings it is sent under) goes to POST /v1/integrations/<vendor> of an in-process app on the
given bundle; the table shows the status, whether it was scored and its warnings. Not a test:
the tests assert the outcomes (tests/serving/test_integrations.py); this shows them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", type=Path, default=ROOT / "models" / "current")
    parser.add_argument("--fixtures", type=Path, default=ROOT / "tests" / "serving" / "fixtures")
    args = parser.parse_args()

    from features.settings import Settings
    from serving import create_app

    shapes = json.loads((args.fixtures / "shapes.json").read_text())["shapes"]
    apps: dict[str, object] = {}
    rows = []
    for shape in shapes:
        overrides = shape.get("settings", {})
        key = json.dumps(overrides, sort_keys=True)
        if key not in apps:
            apps[key] = create_app(Settings(model_path=args.model_path, api_keys=[], mlflow_tracking_uri=None,
                                            **overrides))
        body = json.loads((args.fixtures / shape["file"]).read_text())
        response = apps[key].test_client().post(f"/v1/integrations/{shape['system']}", json=body)
        answer = response.get_json()
        results = answer.get("results", [answer]) if response.status_code == 200 else []
        scored = f"yes ({len(results)})" if results else "no"
        if response.status_code == 200 and answer.get("errors"):
            scored += f", {len({e['index'] for e in answer['errors']})} refused"
        warnings = sum(len(r.get("warnings", [])) for r in results)
        note = answer.get("error", "") if response.status_code != 200 else ""
        rows.append((shape["shape"], shape["system"], response.status_code, scored, warnings, note))
    for app in apps.values():
        app.extensions["model"].stop_polling()

    widths = [max(len(str(r[i])) for r in rows + [("shape", "vendor", "status", "scored", "warnings", "error")])
              for i in range(6)]
    header = ("shape", "vendor", "status", "scored", "warnings", "error")
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))
    print(f"\n{len(rows)} shapes: {sum(r[2] == 200 for r in rows)} answered 200, "
          f"{sum(r[3].startswith('yes') for r in rows)} scored, model {args.model_path.resolve().name}")


if __name__ == "__main__":
    main()
