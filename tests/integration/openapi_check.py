#!/usr/bin/python3
"""Checks that docs/openapi.yaml and a running sealpostd agree.

Run by test_openapi.sh, which starts the daemon, makes a tenant with a
credential and passes everything on the command line. Three parts:

  the document alone: every schema keyword is one this checker understands
  (so nothing is silently left unchecked), request examples validate
  against their own schemas, every 4xx/5xx response is built on the shared
  Error schema, every secured operation documents 401 with the one
  Unauthorized response;

  every documented (path, method): without credentials, with the wrong kind
  of credential, with the right one and the documented example body, with a
  body that is not JSON, with the wrong content type, and with an unknown
  id (a PUT, which creates, must create: 201). Each answer's status must be
  documented for that operation, its content type must be the documented
  one, and its body must validate against the documented schema. Every 401
  body must be the same bytes, and no answer may carry a secret that an
  example sent (a channel's provider password);

  the sending API for real: setup() saves the documented channel example
  (its endpoint replaced by --sink-url, a provider the test runs) and the
  campaigns that cancel and DELETE may use up; the documented campaign
  example goes out through that channel, the test send reports on it, and
  a channel read back can be PUT again as it is;

  the callback routes for real: a body that is not sealed gets the one 401;
  a delivery report about the test send's message, sealed with the
  provider's key (--provider-keys, what the key exchange gave it) by the
  independent sealer of interop.py, is accepted, its repeat is a duplicate,
  a sealed body that is no callback is a 400; the message's status then
  shows the sealed callback, and the campaign's statistics add up;

  undocumented pairs: other methods on documented paths answer 405 with an
  Allow header naming the documented methods; unknown paths answer 404.

Prints "ok NAME" / "FAIL NAME: DETAIL" lines and a summary; exits 1 when
anything failed. JSON Schema is implemented only as far as the document
uses it: $ref, type, nullable, properties, required, additionalProperties,
enum, items, minItems/maxItems, minLength/maxLength, pattern,
minimum/maximum (+ exclusiveMinimum), maxProperties, allOf, anyOf, oneOf.
"""

import argparse
import copy
import http.client
import json
import re
import secrets
import ssl
import subprocess
import sys
import time
import os
import urllib.parse

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Keywords the validator implements, and those that only annotate.
CHECKED = {"$ref", "type", "nullable", "properties", "required", "additionalProperties", "enum", "items",
           "minItems", "maxItems", "minLength", "maxLength", "pattern", "minimum", "maximum",
           "exclusiveMinimum", "maxProperties", "allOf", "anyOf", "oneOf"}
ANNOTATIONS = {"description", "example", "default", "format", "title", "x-property-name-pattern", "writeOnly",
               "readOnly"}
METHODS = ["get", "post", "put", "patch", "delete"]

passed = 0
failed = 0


def ok(name):
    global passed
    passed += 1
    print("ok     " + name)


def bad(name, detail):
    global failed
    failed += 1
    print("FAIL   %s: %s" % (name, detail))


class Spec:
    def __init__(self, doc):
        self.doc = doc

    def resolve(self, node):
        seen = 0
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise ValueError("external $ref " + ref)
            target = self.doc
            for part in ref[2:].split("/"):
                target = target[part]
            node = target
            seen += 1
            if seen > 20:
                raise ValueError("$ref loop at " + ref)
        return node

    # ---- the validator ----
    def validate(self, schema, value, path="$"):
        """Returns a list of error strings (empty: valid)."""
        errs = []
        schema = self.resolve(schema)
        if value is None:
            if schema.get("nullable") or ("type" not in schema and not _has_type_branches(schema)):
                if "enum" in schema and None not in schema["enum"]:
                    return ["%s: null not in enum" % path]
                return []
            if "type" in schema:
                return ["%s: null where %s expected" % (path, schema["type"])]
        t = schema.get("type")
        if t is not None and not _type_ok(t, value):
            return ["%s: %s where %s expected" % (path, _json_type(value), t)]
        if "enum" in schema and value not in schema["enum"]:
            errs.append("%s: %r not in %r" % (path, value, schema["enum"]))
        if isinstance(value, str):
            if "minLength" in schema and len(value) < schema["minLength"]:
                errs.append("%s: shorter than %d" % (path, schema["minLength"]))
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                errs.append("%s: longer than %d" % (path, schema["maxLength"]))
            if "pattern" in schema and not re.search(schema["pattern"], value):
                errs.append("%s: %r does not match %s" % (path, value[:80], schema["pattern"]))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if "minimum" in schema:
                if schema.get("exclusiveMinimum") and not value > schema["minimum"]:
                    errs.append("%s: %r not above %r" % (path, value, schema["minimum"]))
                elif value < schema["minimum"]:
                    errs.append("%s: %r below %r" % (path, value, schema["minimum"]))
            if "maximum" in schema and value > schema["maximum"]:
                errs.append("%s: %r above %r" % (path, value, schema["maximum"]))
        if isinstance(value, list):
            if "minItems" in schema and len(value) < schema["minItems"]:
                errs.append("%s: fewer than %d items" % (path, schema["minItems"]))
            if "maxItems" in schema and len(value) > schema["maxItems"]:
                errs.append("%s: more than %d items" % (path, schema["maxItems"]))
            if "items" in schema:
                for i, v in enumerate(value):
                    errs += self.validate(schema["items"], v, "%s[%d]" % (path, i))
        if isinstance(value, dict):
            props = schema.get("properties", {})
            for r in schema.get("required", []):
                if r not in value:
                    errs.append("%s: missing %s" % (path, r))
            if "maxProperties" in schema and len(value) > schema["maxProperties"]:
                errs.append("%s: more than %d members" % (path, schema["maxProperties"]))
            ap = schema.get("additionalProperties", True)
            for k, v in value.items():
                if k in props:
                    errs += self.validate(props[k], v, "%s.%s" % (path, k))
                elif ap is False:
                    errs.append("%s: unexpected member %s" % (path, k))
                elif isinstance(ap, dict):
                    errs += self.validate(ap, v, "%s.%s" % (path, k))
            pat = schema.get("x-property-name-pattern")
            if pat:
                for k in value:
                    if not re.search(pat, k):
                        errs.append("%s: member name %r does not match %s" % (path, k, pat))
        for sub in schema.get("allOf", []):
            errs += self.validate(sub, value, path)
        if "anyOf" in schema:
            if not any(not self.validate(s, value, path) for s in schema["anyOf"]):
                errs.append("%s: matches none of anyOf" % path)
        if "oneOf" in schema:
            n = sum(1 for s in schema["oneOf"] if not self.validate(s, value, path))
            if n != 1:
                errs.append("%s: matches %d of oneOf (want 1)" % (path, n))
        return errs

    def unknown_keywords(self, schema, where, out):
        """Collects keywords this validator does not implement."""
        if isinstance(schema, dict):
            if "$ref" in schema:
                return
            for k, v in schema.items():
                if k not in CHECKED and k not in ANNOTATIONS:
                    out.append("%s: %s" % (where, k))
            for k in ("items", "additionalProperties"):
                if isinstance(schema.get(k), dict):
                    self.unknown_keywords(schema[k], where + "." + k, out)
            for name, sub in schema.get("properties", {}).items():
                self.unknown_keywords(sub, where + ".properties." + name, out)
            for k in ("allOf", "anyOf", "oneOf"):
                for i, sub in enumerate(schema.get(k, [])):
                    self.unknown_keywords(sub, "%s.%s[%d]" % (where, k, i), out)


def _has_type_branches(schema):
    return any(k in schema for k in ("allOf", "anyOf", "oneOf"))


def _json_type(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _type_ok(t, v):
    jt = _json_type(v)
    if t == "number":
        return jt in ("integer", "number")
    if t == "integer":
        return jt == "integer" or (jt == "number" and float(v).is_integer())
    return jt == t


def _no_dupes(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError("duplicate key %r" % k)
        d[k] = v
    return d


# ---- talking to the daemon ----
class Client:
    def __init__(self, url, cacert):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.cacert = cacert
        self.ctx = None

    def call(self, method, path, body=None, headers=None):
        if self.ctx is None:
            self.ctx = ssl.create_default_context(cafile=self.cacert)
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            conn.close()


class Checker:
    def __init__(self, spec, client, args):
        self.spec = spec
        self.client = client
        self.args = args
        self.admin = {"X-Client-Access-Key": args.admin_key, "X-Api-Secret": args.admin_secret}
        self.tenant = {"X-Client-Access-Key": args.tenant_key, "X-Api-Secret": args.tenant_secret}
        self.unauthorized_bodies = set()
        self.secrets = set()
        self.state = {}

    def op(self, path, method):
        return self.spec.doc["paths"][path][method]

    def documented(self, path, method):
        return {str(k): self.spec.resolve(v) for k, v in self.op(path, method)["responses"].items()}

    def check_response(self, name, responses, status, headers, data, want=None):
        """status is documented; content type and body match that response."""
        leaked = [s for s in self.secrets if s in data]
        if leaked:
            bad(name, "the answer carries a secret an example sent")
            return None
        if want is not None and status not in want:
            bad(name, "status %d, want one of %s; body %r" % (status, sorted(want), data[:200]))
            return None
        r = responses.get(str(status))
        if r is None:
            bad(name, "status %d is not documented (documented: %s); body %r"
                % (status, sorted(responses), data[:200]))
            return None
        content = r.get("content")
        if not content:
            if data:
                bad(name, "status %d is documented without a body, got %r" % (status, data[:200]))
                return None
            ok(name)
            return None
        ctype = headers.get("content-type", "").split(";")[0].strip()
        if ctype not in content:
            bad(name, "content type %r, documented %s" % (ctype, list(content)))
            return None
        for h, hdef in (r.get("headers") or {}).items():
            if h.lower() == "retry-after" and status in (429,) and h.lower() not in headers:
                bad(name, "status %d without a %s header" % (status, h))
                return None
        if ctype != "application/json":
            ok(name)
            return data
        try:
            value = json.loads(data, object_pairs_hook=_no_dupes)
        except ValueError as e:
            bad(name, "body is not JSON (%s): %r" % (e, data[:200]))
            return None
        errs = self.spec.validate(content[ctype]["schema"], value)
        if errs:
            bad(name, "body does not validate: %s; body %r" % ("; ".join(errs[:5]), data[:300]))
            return None
        if status == 401:
            self.unauthorized_bodies.add(data)
        ok(name)
        return value

    def creds_for(self, op):
        tags = op.get("tags", [])
        if "admin" in tags:
            return self.admin, self.tenant
        if "tenant" in tags:
            return self.tenant, self.admin
        return None, None

    # ---- the examples, as sent ----
    def example(self, path, method):
        """The documented request example of (path, method), as this run sends it: a copy, with the
        channel's endpoint pointed at the provider the test runs (--sink-url)."""
        rb = self.op(path, method).get("requestBody")
        if not rb:
            return None
        ex = copy.deepcopy(rb["content"]["application/json"].get("example"))
        if path == "/v1/channels/{id}" and isinstance(ex, dict) and self.args.sink_url:
            ex["request"]["endpoint"] = self.args.sink_url
        return ex

    def example_secrets(self):
        """Secret values the examples send: no answer may ever carry one."""
        out = set()
        ex = self.example("/v1/channels/{id}", "put") if "/v1/channels/{id}" in self.spec.doc["paths"] else None
        auth = (ex or {}).get("auth") or {}
        for k in ("password", "client_secret"):
            if auth.get(k):
                out.add(auth[k].encode())
        return out

    def concrete(self, path, method, state):
        """The path with its parameters filled for this method."""
        if path == "/admin/v1/tenants/{id}" and method == "delete":
            return "/admin/v1/tenants/" + state["doomed_tenant"]
        if path == "/admin/v1/tenants/{id}/credentials/{cid}":
            return "/admin/v1/tenants/%s/credentials/%s" % (self.args.tenant, state["doomed_cred"])
        if path.startswith("/admin/v1/tenants/{id}"):
            return path.replace("{id}", self.args.tenant)
        if path == "/v1/profiles/{id}":
            return "/v1/profiles/" + urllib.parse.quote(state["profile"], safe="")
        if path == "/v1/channels/{id}":
            return "/v1/channels/" + (state["doomed_channel"] if method == "delete" else state["channel"])
        if path == "/v1/campaigns/{id}" and method == "delete":
            return "/v1/campaigns/" + state["doomed_campaign"]
        if path == "/v1/campaigns/{id}/cancel":
            return "/v1/campaigns/%s/cancel" % state["cancel_campaign"]
        if path.startswith("/v1/campaigns/{id}"):
            return path.replace("{id}", state["campaign"])
        if path == "/v1/messages/{message_id}":
            return "/v1/messages/" + state.get("message", "msg_none")
        if path.startswith("/callbacks/v1/"):
            return path.replace("{tenant}", self.args.tenant).replace("{channel}", state.get("channel", "x"))
        return path

    def missing(self, path):
        """The path with a resource that does not exist."""
        tag = secrets.token_hex(4)
        return (path.replace("{cid}", "00000000-0000-4000-8000-000000000000")
                .replace("/admin/v1/tenants/{id}", "/admin/v1/tenants/no-such-tenant-" + tag)
                .replace("/v1/profiles/{id}", "/v1/profiles/no-such-profile-" + tag)
                .replace("/v1/channels/{id}", "/v1/channels/no-such-channel-" + tag)
                .replace("/v1/campaigns/{id}", "/v1/campaigns/no-such-campaign-" + tag)
                .replace("/v1/messages/{message_id}", "/v1/messages/msg_no_such_" + tag))

    def setup(self):
        """A tenant and a credential that DELETE may destroy; the channel the campaign example names
        (the channel example, saved before the campaign POST needs it), a channel and a campaign to
        delete, a scheduled campaign to cancel."""
        state = {"profile": "user-42"}
        tid = "oa-doomed-" + secrets.token_hex(4)
        st, _, data = self.client.call("POST", "/admin/v1/tenants", json.dumps({"id": tid, "name": "doomed"}),
                                       dict(self.admin, **{"Content-Type": "application/json"}))
        if st != 201:
            bad("setup: a tenant to delete", "%d %r" % (st, data[:200]))
        state["doomed_tenant"] = tid
        st, _, data = self.client.call("POST", "/admin/v1/tenants/%s/credentials" % self.args.tenant, "{}",
                                       dict(self.admin, **{"Content-Type": "application/json"}))
        if st != 201:
            bad("setup: a credential to revoke", "%d %r" % (st, data[:200]))
            state["doomed_cred"] = "00000000-0000-4000-8000-000000000001"
        else:
            state["doomed_cred"] = json.loads(data)["id"]
        paths = self.spec.doc["paths"]
        if "/v1/channels/{id}" not in paths or "/v1/campaigns" not in paths:
            return state
        tag = secrets.token_hex(4)
        campaign = self.example("/v1/campaigns", "post")
        channel = self.example("/v1/channels/{id}", "put")
        state["channel"] = campaign["channel"]
        state["campaign"] = campaign.get("id", "oa-campaign-" + tag)
        state["doomed_channel"] = "oa-doomed-" + tag
        state["doomed_campaign"] = "oa-doomed-" + tag
        state["cancel_campaign"] = "oa-cancel-" + tag
        h = dict(self.tenant, **{"Content-Type": "application/json"})
        for cid, what in ((state["channel"], "the campaign example's channel"), (state["doomed_channel"],
                                                                                  "a channel to delete")):
            st, _, data = self.client.call("PUT", "/v1/channels/" + cid, json.dumps(channel), h)
            if st != 201:
                bad("setup: " + what, "%d %r" % (st, data[:300]))
        if self.args.after_setup:
            # the provider gets the channel's key (the key exchange), now that saving the channel made it
            r = subprocess.run(self.args.after_setup, shell=True, capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                bad("setup: --after-setup", "exit %d: %s" % (r.returncode, (r.stderr or r.stdout)[-400:]))
            else:
                ok("setup: --after-setup")
        later = int(time.time()) + 86400
        for cid, what in ((state["doomed_campaign"], "a scheduled campaign to delete"),
                          (state["cancel_campaign"], "a scheduled campaign to cancel")):
            body = dict(campaign, id=cid, send_at=later)
            st, _, data = self.client.call("POST", "/v1/campaigns", json.dumps(body), h)
            if st != 201 or json.loads(data).get("state") != "scheduled":
                bad("setup: " + what, "%d %r" % (st, data[:300]))
        return state

    # Profiles first (the events and the campaign audience name the example profile), then events,
    # then campaigns (their channel is made in setup); within each, shorter paths first.
    @staticmethod
    def _rank(path):
        if path.startswith("/callbacks/"):
            return 3  # after the test send, whose message they report on
        if path.startswith("/v1/campaigns"):
            return 2
        return 1 if path == "/v1/events" else 0

    def run_documented(self):
        self.secrets = self.example_secrets()
        state = self.setup()
        self.state = state
        order = {"post": 0, "get": 1, "patch": 2, "put": 3, "delete": 4}
        ops = [(p, m) for p, item in self.spec.doc["paths"].items() for m in item if m in METHODS]
        ops.sort(key=lambda pm: (order[pm[1]], self._rank(pm[0]), pm[0].count("/"), pm[0]))
        for path, method in ops:
            op = self.op(path, method)
            responses = self.documented(path, method)
            right, wrong = self.creds_for(op)
            url = self.concrete(path, method, state)
            label = "%s %s" % (method.upper(), path)
            rb = op.get("requestBody")
            example = None
            if rb:
                media = rb["content"]["application/json"]
                example = self.example(path, method)
                errs = self.spec.validate(media["schema"], example) if example is not None else ["no example"]
                if errs:
                    bad(label + ": the example as sent validates", "; ".join(errs[:5]))
                else:
                    ok(label + ": the example as sent validates")
            body = json.dumps(example) if example is not None else None
            jh = {"Content-Type": "application/json"} if body is not None else {}
            secured = op.get("security", self.spec.doc.get("security")) != []
            if path.startswith("/callbacks/"):
                self.check_callback(path, url, body, responses)
                continue
            if secured:
                st, h, d = self.client.call(method.upper(), url, body, jh)
                self.check_response(label + " without credentials", responses, st, h, d, want={401})
                st, h, d = self.client.call(method.upper(), url, body, dict(wrong, **jh))
                self.check_response(label + " with the other API's credential", responses, st, h, d, want={401})
                if body is not None:
                    st, h, d = self.client.call(method.upper(), url, b'{"not json', dict(right, **jh))
                    v = self.check_response(label + " with a body that is not JSON", responses, st, h, d, want={400})
                    if v is not None and v["error"]["code"] != "bad_json":
                        bad(label + " with a body that is not JSON: code", v["error"]["code"])
                    st, h, d = self.client.call(method.upper(), url, body, dict(right, **{"Content-Type": "text/plain"}))
                    self.check_response(label + " with Content-Type text/plain", responses, st, h, d, want={415})
                if "{" in path and method == "put" and "404" not in responses:
                    # an upsert: a new id is created, not missing
                    fresh = self.missing(path)
                    st, h, d = self.client.call("PUT", fresh, body, dict(right, **jh))
                    self.check_response(label + " of a new id creates it", responses, st, h, d, want={201})
                    st, _, d = self.client.call("DELETE", fresh, None, right)
                    if st != 204:
                        bad(label + " of a new id: cleaning up", "DELETE %d %r" % (st, d[:200]))
                elif "{" in path:
                    st, h, d = self.client.call(method.upper(), self.missing(path), body, dict(right, **jh))
                    self.check_response(label + " of a missing resource", responses, st, h, d, want={404})
                st, h, d = self.client.call(method.upper(), url, body, dict(right, **jh))
            else:
                st, h, d = self.client.call(method.upper(), url, body, jh)
            success = {int(s) for s in responses if s.startswith("2")}
            value = self.check_response(label, responses, st, h, d, want=success)
            key = {"/admin/v1/tenants": "tenants", "/v1/channels": "channels", "/v1/campaigns": "campaigns"}.get(path)
            if key and method == "get":
                self.check_paging(label, path, key, responses, right)
            if value is not None:
                self.check_semantics(path, method, url, value, responses, right)

    def check_paging(self, label, path, key, responses, right):
        st, h, d = self.client.call("GET", path + "?limit=0", None, right)
        self.check_response(label + "?limit=0", responses, st, h, d, want={400})
        st, h, d = self.client.call("GET", path + "?limit=1", None, right)
        v = self.check_response(label + "?limit=1", responses, st, h, d, want={200})
        if v is None:
            return
        if len(v[key]) != 1 or v["next"] is None:
            bad(label + "?limit=1 pages", "want one item and a next, got %r" % d[:200])
            return
        st, h, d = self.client.call("GET", "%s?limit=1&after=%s" % (path, urllib.parse.quote(v["next"])), None, right)
        w = self.check_response(label + "?limit=1&after=next", responses, st, h, d, want={200})
        if w is not None and (len(w[key]) != 1 or w[key][0]["id"] <= v[key][0]["id"]):
            bad(label + " the next page follows the first", "%r then %r" % (v[key][0]["id"], d[:200]))

    def check_semantics(self, path, method, url, value, responses, right):
        """What the schema cannot say about the sending API's answers."""
        label = "%s %s" % (method.upper(), path)
        jh = dict(right or {}, **{"Content-Type": "application/json"})
        if path == "/v1/channels/{id}" and method == "get":
            example = self.example(path, "put")
            cfg = value["config"]
            if cfg["request"]["endpoint"] != example["request"]["endpoint"] or cfg["kind"] != example["kind"]:
                bad(label + " shows the document saved", repr(cfg)[:300])
            else:
                ok(label + " shows the document saved")
            if (example.get("encryption") or {}).get("enabled") and "encryption_key_version" not in value:
                bad(label + " names the active provider key version", repr(value)[:300])
            else:
                ok(label + " names the active provider key version")
            # the canonical form, secret marker and all, goes back in unchanged
            st, h, d = self.client.call("PUT", url, json.dumps(cfg), jh)
            put = self.documented(path, "put")
            v = self.check_response("PUT " + path + " of its own GET config (the secret kept)", put, st, h, d,
                                    want={200})
            if v is not None and v["config"] != cfg:
                bad("PUT " + path + " of its own GET config: unchanged", "%r vs %r" % (v["config"], cfg))
        elif path == "/v1/campaigns" and method == "post":
            if value["state"] not in ("sending", "done") or value["channel"] != self.state["channel"]:
                bad(label + ": sent now through the channel", repr(value)[:300])
            else:
                ok(label + ": sent now through the channel")
            st, h, d = self.client.call("POST", "/v1/campaigns", json.dumps(self.example(path, method)), jh)
            v = self.check_response(label + " again with the same id", responses, st, h, d, want={409})
            if v is not None and v["error"]["code"] != "exists":
                bad(label + " again with the same id: code", v["error"]["code"])
        elif path == "/v1/campaigns/{id}" and method == "get":
            if value["total"] < 1 or sum(value["messages"].values()) != value["total"]:
                bad(label + ": the message counts add up to the total", repr(value)[:300])
            else:
                ok(label + ": the message counts add up to the total")
        elif path == "/v1/campaigns/{id}/test":
            enc = (self.example("/v1/channels/{id}", "put").get("encryption") or {}).get("enabled")
            c = value["checks"]
            if enc and not (c["encrypted"] and c["plaintext_absent_on_wire"] and value["key_version"]):
                bad(label + ": the payload was sealed", repr(value))
            elif self.args.sink_url and value["provider_status"] is None:
                bad(label + ": the provider answered", repr(value))
            elif self.args.expect_delivered and not value["ok"]:
                bad(label + ": delivered to the provider, which has the key", repr(value))
            elif value["ok"] != (c["provider_accepted"] and c["encrypted"] and c["plaintext_absent_on_wire"]):
                bad(label + ": ok is the three checks", repr(value))
            else:
                ok(label + ": the report (%s, provider %s)" % (value["result"], value["provider_status"]))
            # a profile that does not exist is the report's finding, not a 404
            if value.get("status_url") != "/v1/messages/" + value["message_id"]:
                bad(label + ": status_url names the message", repr(value))
            else:
                ok(label + ": status_url names the message")
            self.state["message"] = value["message_id"]
            st, h, d = self.client.call("POST", url, json.dumps({"profile_id": "no-such-profile"}), jh)
            v = self.check_response(label + " to a missing profile", responses, st, h, d, want={200})
            if v is not None and (v["ok"] or v["result"] != "SP_ERR_NOT_FOUND"):
                bad(label + " to a missing profile: says so", repr(v))
        elif path == "/v1/messages/{message_id}":
            if self.state.get("callback_accepted") and not (value["callback"] and value["callback"]["encrypted"]
                                                            and value["state"] == "delivered"):
                bad(label + ": shows the sealed delivery report", repr(value))
            else:
                ok(label + ": the test message, tracked")
        elif path == "/v1/campaigns/{id}/stats":
            if sum(value["states"].values()) != value["total"] or value["total"] < 1:
                bad(label + ": the states add up to the total", repr(value)[:300])
            else:
                ok(label + ": the states add up to the total")
            st, h, d = self.client.call("GET", url + "?bucket=0", None, right)
            self.check_response(label + "?bucket=0", responses, st, h, d, want={400})
        elif path == "/v1/campaigns/{id}/cancel":
            if value["state"] != "cancelled":
                bad(label + ": cancelled", repr(value)[:300])
            else:
                ok(label + ": cancelled")
        elif path == "/v1/channels/{id}" and method == "delete":
            st, h, d = self.client.call("DELETE", "/v1/channels/" + self.state["channel"], None, right)
            v = self.check_response(label + " of a channel a campaign uses", responses, st, h, d, want={409})
            if v is not None and v["error"]["code"] != "in_use":
                bad(label + " of a channel a campaign uses: code", v["error"]["code"])

    def check_callback(self, path, url, example_body, responses):
        """A callback route: no credential, the signature authenticates."""
        label = "POST " + path
        st, h, d = self.client.call("POST", url, example_body, {"Content-Type": "application/json"})
        self.check_response(label + " not sealed (the example envelope, no headers)", responses, st, h, d,
                            want={401})
        if not self.args.provider_keys or "message" not in self.state:
            bad(label + " sealed", "needs --provider-keys and a test send's message id")
            return
        import interop
        version, key = interop.active_of(interop.load_keys(self.args.provider_keys))
        if path.endswith("/dlr"):
            pt = json.dumps({"version": "v2", "events": {"success": [
                {"event": "delivered", "ts": int(time.time()), "meta": self.state["message"]}]}}).encode()
        else:
            pt = b"from=%2B15550001111&text=hello&smsc=smsc0"
        wid = "cb_" + secrets.token_hex(8)
        msg = interop.py_seal(key, version, "aes-256-gcm", pt, wid=wid)
        st, h, d = self.client.call("POST", url, msg["body"], msg["headers"])
        v = self.check_response(label + " sealed", responses, st, h, d, want={200})
        if v is not None:
            if v.get("status") != "accepted" or v.get("events") != 1:
                bad(label + " sealed: accepted, one event", repr(v))
            elif path.endswith("/dlr"):
                self.state["callback_accepted"] = True
        msg = interop.py_seal(key, version, "aes-256-gcm", pt, wid=wid)
        st, h, d = self.client.call("POST", url, msg["body"], msg["headers"])
        v = self.check_response(label + " sealed again (same webhook-id)", responses, st, h, d, want={200})
        if v is not None and v != {"status": "duplicate"}:
            bad(label + " sealed again: duplicate", repr(v))
        msg = interop.py_seal(key, version, "aes-256-gcm", b'{"version":"v9"}')
        st, h, d = self.client.call("POST", url, msg["body"], msg["headers"])
        v = self.check_response(label + " sealed, not a callback body", responses, st, h, d, want={400})
        if v is not None and v["error"]["code"] != "bad_callback":
            bad(label + " sealed, not a callback body: code", v["error"]["code"])

    def run_undocumented(self):
        comp = self.spec.doc["components"]["responses"]
        r405 = {"405": self.spec.resolve(comp["MethodNotAllowed"])}
        r404 = {"404": self.spec.resolve(comp["NotFound"])}
        state = dict(getattr(self, "state", {}))
        state.setdefault("profile", "user-42")
        for k in ("doomed_tenant", "doomed_cred", "channel", "doomed_channel", "campaign", "doomed_campaign",
                  "cancel_campaign"):
            state.setdefault(k, "x")
        for path, item in self.spec.doc["paths"].items():
            have = [m for m in item if m in METHODS]
            op = item[have[0]]
            right, _ = self.creds_for(op)
            url = self.concrete(path, "get", state)
            if path.endswith("{cid}"):
                url = "/admin/v1/tenants/%s/credentials/00000000-0000-4000-8000-000000000000" % self.args.tenant
            for m in METHODS:
                if m in have:
                    continue
                label = "undocumented %s %s" % (m.upper(), path)
                hdrs = dict(right or {})
                body = None
                if m in ("post", "put", "patch"):
                    body = "{}"
                    hdrs["Content-Type"] = "application/json"
                st, h, d = self.client.call(m.upper(), url, body, hdrs)
                if self.check_response(label, r405, st, h, d, want={405}) is None:
                    continue
                allow = {a.strip().lower() for a in h.get("allow", "").split(",") if a.strip()}
                if not set(have) <= allow or not allow <= set(have) | {"head", "options"}:
                    bad(label + ": Allow", "%r, documented %s" % (h.get("allow"), have))
                else:
                    ok(label + ": Allow")
        unknown = [("GET", "/", None), ("GET", "/nope", None), ("GET", "/v2/profiles", self.tenant),
                   ("GET", "/v1", self.tenant), ("GET", "/v1/nope", self.tenant),
                   ("GET", "/v1/profiles/a/b", self.tenant), ("GET", "/admin/v1", self.admin),
                   ("GET", "/admin/v1/nope", self.admin), ("GET", "/admin/v2/tenants", self.admin),
                   ("GET", "/admin/v1/tenants/%s/nope" % self.args.tenant, self.admin),
                   ("GET", "/admin/v1/tenants/%s/credentials/a/b" % self.args.tenant, self.admin),
                   ("GET", "/healthz/x", None), ("GET", "/metricsx", None),
                   ("GET", "/v1/channels/a/b", self.tenant), ("GET", "/v1/campaigns/a/test/b", self.tenant),
                   ("POST", "/v1/campaigns/%s/nope" % state["campaign"], self.tenant)]
        for m, url, creds in unknown:
            st, h, d = self.client.call(m, url, None, creds or {})
            self.check_response("unknown route %s %s" % (m, url), r404, st, h, d, want={404})

    def run_document_checks(self):
        doc = self.spec.doc
        if doc.get("openapi") != "3.0.3":
            bad("document: openapi 3.0.3", repr(doc.get("openapi")))
        schemes = doc["components"]["securitySchemes"]
        hdrs = sorted(s.get("name") for s in schemes.values() if s.get("type") == "apiKey" and s.get("in") == "header")
        if hdrs == ["X-Api-Secret", "X-Client-Access-Key"]:
            ok("document: the two auth headers are apiKey security schemes")
        else:
            bad("document: auth headers", repr(hdrs))
        out = []
        for name, s in doc["components"]["schemas"].items():
            self.spec.unknown_keywords(s, "schemas." + name, out)
        for name, r in doc["components"]["responses"].items():
            for media in (r.get("content") or {}).values():
                self.spec.unknown_keywords(media["schema"], "responses." + name, out)
        for p, item in doc["paths"].items():
            for m, op in item.items():
                if m not in METHODS:
                    continue
                for st, r in op["responses"].items():
                    for media in (self.spec.resolve(r).get("content") or {}).values():
                        self.spec.unknown_keywords(media["schema"], "%s %s %s" % (m, p, st), out)
                rb = op.get("requestBody")
                if rb:
                    self.spec.unknown_keywords(rb["content"]["application/json"]["schema"], "%s %s body" % (m, p), out)
        if out:
            bad("document: every schema keyword is checked", "; ".join(out[:10]))
        else:
            ok("document: every schema keyword is checked")
        bad_examples = []
        for p, item in doc["paths"].items():
            for m, op in item.items():
                if m not in METHODS:
                    continue
                for st, r in op["responses"].items():
                    for ctype, media in (self.spec.resolve(r).get("content") or {}).items():
                        if "example" in media:
                            errs = self.spec.validate(media["schema"], media["example"])
                            if errs:
                                bad_examples.append("%s %s %s: %s" % (m, p, st, errs[0]))
                rb = op.get("requestBody")
                if rb:
                    media = rb["content"]["application/json"]
                    errs = self.spec.validate(media["schema"], media.get("example")) if "example" in media else \
                        ["no example"]
                    if errs:
                        bad_examples.append("%s %s body: %s" % (m, p, errs[0]))
        if bad_examples:
            bad("document: every example validates against its schema", "; ".join(bad_examples[:5]))
        else:
            ok("document: every example validates against its schema")
        error_ref = "#/components/schemas/Error"
        for p, item in doc["paths"].items():
            for m, op in item.items():
                if m not in METHODS:
                    continue
                label = "document: %s %s" % (m.upper(), p)
                secured = op.get("security", doc.get("security")) != []
                resp = op["responses"]
                if secured:
                    if resp.get("401", {}).get("$ref") == "#/components/responses/Unauthorized" and \
                            resp.get("403", {}).get("$ref") == "#/components/responses/Forbidden":
                        ok(label + " documents the shared 401 and 403")
                    else:
                        bad(label + " documents the shared 401 and 403", repr(resp.get("401")))
                for st, r in resp.items():
                    # /healthz answers its own document when unhealthy (api.md).
                    if not str(st).startswith(("4", "5")) or p == "/healthz":
                        continue
                    schema = self.spec.resolve(r).get("content", {}).get("application/json", {}).get("schema", {})
                    if not self._built_on_error(schema, error_ref):
                        bad(label + " %s is built on Error" % st, repr(schema)[:200])

    def _built_on_error(self, schema, ref):
        if schema.get("$ref") == ref:
            return True
        if any(s.get("$ref") == ref for s in schema.get("allOf", [])):
            return True
        # The fixed 401/403 bodies are narrower copies of Error: each must validate as an Error.
        if "$ref" in schema:
            ex = self.spec.resolve(schema)
            try:
                fixed = ex["properties"]["error"]["properties"]
            except KeyError:
                return False
            sample = {"error": {"code": fixed["code"]["enum"][0], "message": fixed["message"]["enum"][0]}}
            return not self.spec.validate({"$ref": ref}, sample)
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--cacert", required=True)
    ap.add_argument("--admin-key", required=True)
    ap.add_argument("--admin-secret", required=True)
    ap.add_argument("--tenant", required=True)
    ap.add_argument("--tenant-key", required=True)
    ap.add_argument("--tenant-secret", required=True)
    ap.add_argument("--sink-url", help="the endpoint the channel example is given (a provider the test runs)")
    ap.add_argument("--after-setup", help="a shell command run once setup() has saved the channel")
    ap.add_argument("--expect-delivered", action="store_true",
                    help="the test send must reach a provider that accepts it (ok: true)")
    ap.add_argument("--provider-keys", help="the provider's key file (the key exchange's), to seal callbacks")
    ap.add_argument("--document-only", action="store_true")
    args = ap.parse_args()
    with open(args.spec) as f:
        spec = Spec(yaml.safe_load(f))
    checker = Checker(spec, Client(args.url, args.cacert), args)
    checker.run_document_checks()
    if not args.document_only:
        checker.run_documented()
        checker.run_undocumented()
        if len(checker.unauthorized_bodies) == 1:
            ok("every 401 body is the same bytes")
        else:
            bad("every 401 body is the same bytes", repr(sorted(checker.unauthorized_bodies)))
    print("openapi_check: %d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
