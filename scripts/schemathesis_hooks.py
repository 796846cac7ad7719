"""schemathesis hooks for scripts/schemathesis.sh (the API's contract test).

One rule of the API no JSON Schema keyword can state: a job's `secrets`
and `env` name different variables (a name in both is refused with 400
VALIDATION_ERROR). Generated submissions that break it are dropped rather
than sent as "valid"; every check still runs on every other case.
"""

import schemathesis


@schemathesis.hook("filter_case").apply_to(method="POST", path="/api/v1/jobs")
def secrets_apart_from_env(context, case):
    body = case.body
    if not isinstance(body, dict):
        return True
    env, secrets = body.get("env"), body.get("secrets")
    if isinstance(env, dict) and isinstance(secrets, dict):
        return not (env.keys() & secrets.keys())
    return True
