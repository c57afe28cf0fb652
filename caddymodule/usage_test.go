package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/zapgate/caddy-zapier/usage"
)

func TestUnmarshalUsageAndQuota(t *testing.T) {
	d := caddyfile.NewTestDispenser(`zapier {
		usage {
			retention 30d
			action_run_tasks 1
			mcp_call_tasks 3
		}
		quota {
			tasks 1000/720h
			tenant acme 50/24h
			tenant big 100000/720h
		}
	}`)
	val, err := parseGlobalOption(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got App
	if err := json.Unmarshal(val.(httpcaddyfile.App).Value, &got); err != nil {
		t.Fatal(err)
	}
	if got.Usage == nil || *got.Usage.MCPCallTasks != 3 || *got.Usage.ActionRunTasks != 1 || got.Usage.Retention != caddy.Duration(30*24*time.Hour) {
		t.Fatalf("usage: %+v", got.Usage)
	}
	if got.Quota == nil || got.Quota.Tasks != "1000/720h" || got.Quota.Tenants["acme"] != "50/24h" || len(got.Quota.Tenants) != 2 {
		t.Fatalf("quota: %+v", got.Quota)
	}
	q, err := usage.ParseQuotas(got.Quota.Tasks, got.Quota.Tenants, caddy.ParseDuration)
	if err != nil || q.For("acme").Tasks != 50 || q.For("other").Tasks != 1000 {
		t.Fatalf("%+v %v", q, err)
	}

	for _, bad := range []string{
		"usage maybe", "usage {\n retention 10m\n}", "usage {\n mcp_call_tasks -1\n}", "usage {\n colour red\n}",
		"quota {\n tasks 10/30m\n}", "quota {\n tenant acme\n}", "quota {\n tenant acme 5\n}", "quota {\n weekly 5/1h\n}",
	} {
		d := caddyfile.NewTestDispenser("zapier {\n" + bad + "\n}")
		if _, err := parseGlobalOption(d, nil); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
	d = caddyfile.NewTestDispenser("zapier {\n usage off\n}")
	val, err = parseGlobalOption(d, nil)
	if err != nil || !strings.Contains(string(val.(httpcaddyfile.App).Value), `"usage":{"off":true}`) {
		t.Fatalf("usage off: %v %s", err, val.(httpcaddyfile.App).Value)
	}
}
