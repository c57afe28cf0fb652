package caddymodule

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func TestUnmarshalKeySyncAndRedis(t *testing.T) {
	d := caddyfile.NewTestDispenser(`zapier {
		key_sync 5s
		cache {
			redis {env.REDIS_URL}
			redis_key {env.REDIS_KEY}
			redis_timeout 100ms
			redis_prefix gw:
		}
	}`)
	val, err := parseGlobalOption(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := string(val.(httpcaddyfile.App).Value)
	want := `{"key_sync":5000000000,"cache":{"redis":{"url":"{env.REDIS_URL}","key":"{env.REDIS_KEY}","timeout":100000000,"prefix":"gw:"}}}`
	if got != want {
		t.Errorf("adapted = %s\nwant      %s", got, want)
	}
	for _, input := range []string{"zapier {\n key_sync\n}", "zapier {\n cache {\n redis\n }\n}", "zapier {\n cache {\n redis_timeout fast\n }\n}"} {
		if _, err := parseGlobalOption(caddyfile.NewTestDispenser(input), nil); err == nil {
			t.Errorf("%q accepted", input)
		}
	}
}

func TestKeySyncDefaultAndBounds(t *testing.T) {
	app := func(overlap time.Duration) *App {
		a := &App{ClientID: "id", ClientSecret: "s", Issuer: "https://iss", KeyOverlap: caddy.Duration(overlap), JWTTTL: caddy.Duration(time.Minute)}
		zero := caddy.Duration(0)
		a.KeyRotation = &zero
		a.setDefaults()
		a.clientSecret = a.ClientSecret
		return a
	}
	if a := app(24 * time.Hour); a.KeySync != caddy.Duration(time.Minute) {
		t.Errorf("default key_sync with a 24h overlap = %s, want 1m", time.Duration(a.KeySync))
	}
	if a := app(2 * time.Minute); a.KeySync != caddy.Duration(30*time.Second) || a.validateConfig() != nil {
		t.Errorf("default key_sync with key_overlap 2m = %s, want 30s (key_overlap/4)", time.Duration(a.KeySync))
	}
	for _, bad := range []time.Duration{-time.Second, time.Millisecond, 31 * time.Second} {
		a := app(2 * time.Minute)
		a.KeySync = caddy.Duration(bad)
		if err := a.validateConfig(); err == nil || !strings.Contains(err.Error(), "key_sync") {
			t.Errorf("key_sync %s: err = %v", bad, err)
		}
	}
}

func TestProvisionSharedTokensChecksAndNeverLeaks(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	t.Setenv("ITEST_REDIS_URL", "redis://:hunter2-password@127.0.0.1:1/0")
	t.Setenv("ITEST_REDIS_KEY", "S1YemoPSi+35oWy1g1mpvon2Wa6IvEX29B7S9pNZ8ww=") // 32 bytes
	provision := func(r *RedisConfig) (*App, error) {
		a := &App{ClientID: "id", ClientSecret: "s", Issuer: "https://iss", Cache: &CacheConfig{Redis: r}}
		a.setDefaults()
		a.logger = zap.NewNop()
		err := a.provisionSharedTokens(ctx)
		t.Cleanup(func() { a.closeSharedTokens() })
		return a, err
	}

	a, err := provision(&RedisConfig{URL: "{env.ITEST_REDIS_URL}", Key: "{env.ITEST_REDIS_KEY}"})
	if err != nil || a.shared == nil {
		t.Fatalf("valid settings: %v", err)
	}
	if a, err := provision(nil); err != nil || a.shared != nil {
		t.Fatalf("without redis: tier %v, err %v", a.shared, err)
	}
	for _, tc := range []struct {
		r    RedisConfig
		want string
	}{
		{RedisConfig{Key: "{env.ITEST_REDIS_KEY}"}, "url is required"},
		{RedisConfig{URL: "{env.ITEST_REDIS_URL}"}, "key is required"},
		{RedisConfig{URL: "{env.ITEST_REDIS_URL}", Key: "c2hvcnQ="}, "must decode to 32 bytes, not 5"},
		{RedisConfig{URL: "{env.ITEST_REDIS_URL}", Key: "not base64!"}, "not base64"},
		{RedisConfig{URL: "ftp://:hunter2-password@host", Key: "{env.ITEST_REDIS_KEY}"}, "malformed Redis URL"},
		{RedisConfig{URL: "{env.ITEST_REDIS_URL}", Key: "{env.ITEST_REDIS_KEY}", Timeout: -1}, "timeout must not be negative"},
	} {
		_, err := provision(&tc.r)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.r, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "S1YemoPSi+35") {
			t.Errorf("error leaks a secret: %v", err)
		}
	}
}

func TestSharedNamespaceFollowsTheCredentials(t *testing.T) {
	base := func() *App {
		a := &App{ClientID: "id", ClientSecret: "s", Issuer: "https://iss"}
		a.setDefaults()
		return a
	}
	same, other, rotated := base(), base(), base()
	other.ClientID = "another-client"
	rotated.ClientSecret = "rotated"
	if base().sharedNamespace() != same.sharedNamespace() || rotated.sharedNamespace() != same.sharedNamespace() {
		t.Error("gateways with the same credentials would not share tokens")
	}
	if other.sharedNamespace() == same.sharedNamespace() {
		t.Error("gateways of two Zapier clients would share tokens")
	}
	if b, _ := json.Marshal(same); strings.Contains(string(b), same.sharedNamespace()) {
		t.Error("the namespace leaks into the config")
	}
}
