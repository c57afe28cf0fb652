package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
	"github.com/zapgate/caddy-zapier/integration/redisserver"
)

// The shared token tier: sidecars (real Caddy processes) sharing a real
// redis-server started by the test, on a port that shifts with
// ITEST_PORT_OFFSET.

var redisPort = 19100 + portOffset

// testRedisKey is the tier's key, given to the sidecars through the
// environment the way production would.
const testRedisKey = "q3aNOy4k8Q4dWb8QeJvSxwS9Tgw2D8cPj1mG3f0yM0E="

func startRedisFleet(t *testing.T, n int, cacheExtra string) (*fleet, *redisserver.Server) {
	t.Helper()
	return startRedisFleetWith(t, n, cacheExtra, fakezapier.Config{}, "")
}

// startRedisFleetWith is startRedisFleet with the fake's config and extra
// lines in the zapier option.
func startRedisFleetWith(t *testing.T, n int, cacheExtra string, fake fakezapier.Config, zapierExtra string) (*fleet, *redisserver.Server) {
	t.Helper()
	redis := redisserver.Start(t, redisPort)
	if !strings.Contains(cacheExtra, "redis_timeout") {
		// Generous on a loaded CI machine: a Redis operation that times
		// out is (correctly) a fallback, which would be a second exchange.
		cacheExtra += "\n\t\t\tredis_timeout 2s"
	}
	f := startFleet(t, fleetOptions{
		n: n,
		zapierExtra: fmt.Sprintf("cache {\n\t\t\tredis %s\n\t\t\tredis_key {env.ITEST_REDIS_KEY}\n\t\t\t%s\n\t\t}\n\t\t%s",
			redis.URL(), cacheExtra, zapierExtra),
		fake: fake,
		env:  []string{"ITEST_REDIS_KEY=" + testRedisKey},
	})
	t.Cleanup(func() { assertNoSecretsInOutput(t, f) })
	return f, redis
}

// assertNoSecretsInOutput checks what the sidecars logged.
func assertNoSecretsInOutput(t *testing.T, f *fleet) {
	for _, s := range f.sidecars {
		out := s.log.String()
		for _, secret := range []string{testSecret, testRedisKey} {
			if strings.Contains(out, secret) {
				t.Errorf("%s logged a secret", s.name)
			}
		}
	}
}

// bearer is the access token the fake saw in an echoed request.
func bearer(e echo) string { return strings.TrimPrefix(e.header("Authorization"), "Bearer ") }

// N sidecars cold for one identity at the same moment: one exchange, one
// token for all.
func TestSharedTierOneExchangeForColdSidecars(t *testing.T) {
	f, _ := startRedisFleet(t, 3, "")
	f.fake.SetTokenDelay(300 * time.Millisecond) // all three are cold while the exchange runs
	for round := range 3 {
		user := fmt.Sprintf("cold-%d", round)
		tokens := make([]string, len(f.sidecars))
		f.all(func(i int, s *sidecar) { tokens[i] = bearer(s.echoAs("shared", user)) })
		if n := f.fake.ExchangesFor("shared", user); n != 1 {
			t.Errorf("%s: three cold sidecars made %d exchanges, want 1", user, n)
		}
		for i, tok := range tokens {
			if tok == "" || tok != tokens[0] {
				t.Errorf("%s: sidecar-%d injected another token than sidecar-0", user, i)
			}
		}
	}

	// One after the other: the second and third take the first one's token.
	f.fake.SetTokenDelay(0)
	for _, s := range f.sidecars {
		s.echoAs("shared", "one-by-one")
	}
	if n := f.fake.ExchangesFor("shared", "one-by-one"); n != 1 {
		t.Errorf("three sidecars one after the other made %d exchanges, want 1", n)
	}
	if got := scrapeMetricAt(t, f.sidecars[1], "caddy_zapier_shared_token_fetches_total", `outcome="shared"`); got < 1 {
		t.Errorf("sidecar-1 counted %v shared fetches", got)
	}
}

// What Redis holds names no identity and contains no token.
func TestSharedTierEncryptsTokensAtRest(t *testing.T) {
	f, redis := startRedisFleet(t, 2, "redis_prefix itest:")
	tenant, user := "tenant-at-rest", "user-at-rest"
	token := bearer(f.sidecars[0].echoAs(tenant, user))
	if again := bearer(f.sidecars[1].echoAs(tenant, user)); again != token {
		t.Fatal("the second sidecar did not get the shared token")
	}

	raw := redis.Client()
	ctx := context.Background()
	keys, err := raw.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	sealed := 0
	for _, k := range keys {
		if !strings.HasPrefix(k, "itest:") {
			t.Errorf("key %q lacks the configured prefix", k)
		}
		dump, err := raw.Dump(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{tenant, user, token, "at-rest"} {
			if strings.Contains(k, secret) || strings.Contains(dump, secret) {
				t.Errorf("Redis key %q or its value holds %q", k, secret)
			}
		}
		if strings.HasSuffix(k, ":tok") {
			data, err := raw.HGet(ctx, k, "data").Bytes()
			if err != nil {
				t.Fatal(err)
			}
			if len(data) < len(token)+16+12 {
				t.Errorf("stored value of %d bytes is too short to be the sealed %d-byte token", len(data), len(token))
			}
			sealed++
		}
	}
	if sealed != 1 {
		t.Fatalf("found %d stored tokens among %v, want 1", sealed, keys)
	}
}

// A token Zapier refuses is dropped from Redis too: the sidecar that meets
// the 401 gets a fresh token (not the revoked one back from Redis), and the
// other sidecar then takes that fresh token instead of exchanging again.
func TestSharedTierForgetsARevokedToken(t *testing.T) {
	f, _ := startRedisFleet(t, 2, "")
	a, b := f.sidecars[0], f.sidecars[1]
	old := bearer(a.echoAs("revoked", "user"))
	b.echoAs("revoked", "user")
	if n := f.fake.Revoke("revoked", "user"); n != 1 {
		t.Fatalf("revoked %d tokens, want the one shared token", n)
	}
	fresh := bearer(a.echoAs("revoked", "user")) // 401, then retried with a fresh token
	if fresh == old {
		t.Fatal("sidecar-0 retried with the revoked token")
	}
	if got := bearer(b.echoAs("revoked", "user")); got != fresh {
		t.Error("sidecar-1 did not take sidecar-0's fresh token")
	}
	if n := f.fake.ExchangesFor("revoked", "user"); n != 2 {
		t.Errorf("%d exchanges, want 2 (the first token and its replacement)", n)
	}
}

// The admin purge reaches Redis: otherwise the purged token would come
// straight back from there.
func TestSharedTierAdminPurge(t *testing.T) {
	f, _ := startRedisFleet(t, 2, "")
	a := f.sidecars[0]
	a.echoAs("purge", "one")
	a.echoAs("purge", "all")
	if status, body := a.adminJSON(http.MethodDelete, "/zapier/tokens", map[string]any{"tenant": "purge", "user": "one"}); status != http.StatusOK || !strings.Contains(string(body), `"purged":1`) {
		t.Fatalf("purge one: %d %s", status, body)
	}
	a.echoAs("purge", "one")
	if status, body := a.admin(http.MethodDelete, "/zapier/tokens"); status != http.StatusOK {
		t.Fatalf("purge all: %d %s", status, body)
	}
	a.echoAs("purge", "all")
	for _, user := range []string{"one", "all"} {
		if n := f.fake.ExchangesFor("purge", user); n != 2 {
			t.Errorf("purge/%s: %d exchanges, want 2 (the purged token must not come back from Redis)", user, n)
		}
	}
}

// Redis killed, then stuck: every request still succeeds, each sidecar on
// its own; when Redis answers again the sidecars share tokens again,
// without a restart.
func TestSharedTierFallsBackAndRecovers(t *testing.T) {
	f, redis := startRedisFleet(t, 2, "redis_timeout 200ms")
	a, b := f.sidecars[0], f.sidecars[1]
	a.echoAs("fallback", "warm")
	b.echoAs("fallback", "warm")
	if n := f.fake.ExchangesFor("fallback", "warm"); n != 1 {
		t.Fatalf("warm-up: %d exchanges, want 1", n)
	}

	// Concurrent requests from both sidecars, none of which may fail.
	burst := func(phase string) {
		t.Helper()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var failures []string
		for i := range 10 {
			for _, s := range f.sidecars {
				wg.Add(1)
				go func() {
					defer wg.Done()
					status, body, err := s.tryEcho("fallback", fmt.Sprintf("%s-%d", phase, i))
					if err != nil || status != http.StatusOK {
						mu.Lock()
						failures = append(failures, fmt.Sprintf("%s: %d %v %s", s.name, status, err, body))
						mu.Unlock()
					}
				}()
			}
		}
		wg.Wait()
		if len(failures) > 0 {
			t.Fatalf("%s: %d of 20 requests failed: %v", phase, len(failures), failures)
		}
		// Cached tokens are still served from each sidecar's own cache.
		a.echoAs("fallback", "warm")
		b.echoAs("fallback", "warm")
	}

	redis.Kill()
	burst("redis-down")
	redis.Restart()
	redis.Pause()
	burst("redis-stuck")
	redis.Resume()

	if n := f.fake.ExchangesFor("fallback", "warm"); n != 1 {
		t.Errorf("the warm identity was exchanged %d times; its cached token should have served", n)
	}

	// Recovery: a fresh identity asked of a, then of b, is exchanged once.
	recovered := 0
	eventually(t, 15*time.Second, "the sidecars to share tokens again", func() bool {
		recovered++
		user := fmt.Sprintf("recovered-%d", recovered)
		a.echoAs("fallback", user)
		b.echoAs("fallback", user)
		return f.fake.ExchangesFor("fallback", user) == 1
	})
	for _, s := range f.sidecars {
		out := s.log.String()
		if !strings.Contains(out, "Redis unavailable") || !strings.Contains(out, "Redis answers again") {
			t.Errorf("%s did not log Redis going away and coming back", s.name)
		}
	}
}

// scrapeMetricAt is scrapeMetric against a sidecar's admin endpoint.
func scrapeMetricAt(t *testing.T, s *sidecar, name, labelMatch string) float64 {
	t.Helper()
	status, body := s.admin(http.MethodGet, "/metrics")
	if status != http.StatusOK {
		t.Fatalf("%s /metrics: %d", s.name, status)
	}
	return metricValue(t, body, name, labelMatch)
}
