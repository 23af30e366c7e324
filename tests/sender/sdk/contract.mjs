// Drives the official Fluxbase SDK's webhook calls against a management API.
// Usage: node contract.mjs <sdk dist/index.js> <api url> <config json>
// Prints one JSON object: each call's name and its value, or its error's message, status and body.
import { pathToFileURL } from "node:url";

const [sdkPath, apiUrl, configText] = process.argv.slice(2);
const config = JSON.parse(configText);
const { createClient } = await import(pathToFileURL(sdkPath).href);

const hooks = createClient(apiUrl, config.serviceKey).management.webhooks;
const readOnly = createClient(apiUrl, config.readOnlyKey).management.webhooks;
const stranger = createClient(apiUrl, "sk_wrong_0123456789abcdef").management.webhooks;
const results = {};

async function call(name, run) {
  try {
    results[name] = { ok: true, value: await run() };
  } catch (error) {
    results[name] = {
      ok: false,
      message: error.message,
      status: error.status ?? null,
      details: error.details ?? null,
    };
  }
  return results[name].value;
}

const created = await call("create", () =>
  hooks.create({
    name: "orders",
    url: config.hookUrl,
    secret: config.secret,
    events: [{ table: "orders", operations: ["INSERT", "UPDATE"] }],
    description: "orders to the billing service",
  }),
);
const id = created.id;
await call("list", () => hooks.list());
const fetched = await call("get", () => hooks.get(id));
await call("update", () => hooks.update(id, { max_retries: 5 }));
await call("update_with_get_answer", () => hooks.update(id, { ...fetched, timeout_seconds: 10 }));
await call("update_is_active", () => hooks.update(id, { is_active: false }));
await call("update_enable", () => hooks.update(id, { enabled: true }));
await call("test", () => hooks.test(id));
await call("list_deliveries", () => hooks.listDeliveries(id));
await call("list_deliveries_limit", () => hooks.listDeliveries(id, 1));
await call("read_only_list", () => readOnly.list());

const failing = await call("create_failing", () =>
  hooks.create({ name: "down", url: config.failingUrl, events: [{ table: "*" }] }),
);
await call("test_failing", () => hooks.test(failing.id));

await call("error_missing_name", () => hooks.create({ url: config.hookUrl }));
await call("error_sdk_typed_events", () =>
  hooks.create({ name: "x", url: config.hookUrl, events: ["user.created"] }),
);
await call("error_invalid_id", () => hooks.get("not-a-uuid"));
await call("error_too_large", () =>
  hooks.create({ name: "x", url: config.hookUrl, description: "x".repeat(70000) }),
);
await call("error_bad_limit", () => hooks.listDeliveries(id, "\u00b2"));
await call("error_read_only_write", () => readOnly.create({ name: "x", url: config.hookUrl }));
await call("error_wrong_key", () => stranger.list());
await call("delete", () => hooks.delete(id));
await call("delete_failing", () => hooks.delete(failing.id));
await call("error_get_deleted", () => hooks.get(id));
await call("error_update_deleted", () => hooks.update(id, { max_retries: 1 }));
await call("error_delete_deleted", () => hooks.delete(id));
await call("error_test_deleted", () => hooks.test(id));
await call("error_deliveries_deleted", () => hooks.listDeliveries(id));
await call("list_after_delete", () => hooks.list());

process.stdout.write(JSON.stringify(results));
