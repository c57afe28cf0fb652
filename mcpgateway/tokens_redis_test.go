package mcpgateway

import (
	"context"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/integration/redisserver"
)

// Two gateways' RedisInvalidations on one channel: what one publishes the
// other hears (its own messages it does not); a Redis restart is noticed
// (live false, then true again), and messages flow again after it.
func TestRedisInvalidations(t *testing.T) {
	srv := redisserver.Start(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type event struct {
		key  string
		live int // 1 up, -1 down
	}
	listen := func(b *RedisInvalidations) chan event {
		ch := make(chan event, 100)
		go b.Listen(ctx, func(key string) { ch <- event{key: key} }, func(up bool) {
			if up {
				ch <- event{live: 1}
			} else {
				ch <- event{live: -1}
			}
		})
		return ch
	}
	next := func(ch chan event) event {
		t.Helper()
		select {
		case e := <-ch:
			return e
		case <-time.After(30 * time.Second):
			t.Fatal("nothing heard")
			return event{}
		}
	}
	a := NewRedisInvalidations(srv.Client(), "test:mcp_token_invalidations")
	b := NewRedisInvalidations(srv.Client(), "test:mcp_token_invalidations")
	ach, bch := listen(a), listen(b)
	if e := next(ach); e.live != 1 {
		t.Fatalf("a: %+v", e)
	}
	if e := next(bch); e.live != 1 {
		t.Fatalf("b: %+v", e)
	}
	if err := a.Publish(ctx, "zapier/mcp/tokens/s1/slack"); err != nil {
		t.Fatal(err)
	}
	if e := next(bch); e.key != "zapier/mcp/tokens/s1/slack" {
		t.Fatalf("b heard %+v", e)
	}
	if err := b.Publish(ctx, "zapier/mcp/tokens/s2/sheets"); err != nil {
		t.Fatal(err)
	}
	if e := next(ach); e.key != "zapier/mcp/tokens/s2/sheets" {
		t.Fatalf("a heard %+v (its own message, or nothing)", e)
	}
	srv.Restart()
	if e := next(bch); e.live != -1 {
		t.Fatalf("b after the restart: %+v", e)
	}
	if e := next(bch); e.live != 1 {
		t.Fatalf("b after the restart: %+v", e)
	}
	for { // a resubscribes too; then its messages reach b again
		if e := next(ach); e.live == 1 {
			break
		}
	}
	if err := a.Publish(ctx, "zapier/mcp/tokens/s3/slack"); err != nil {
		t.Fatal(err)
	}
	if e := next(bch); e.key != "zapier/mcp/tokens/s3/slack" {
		t.Fatalf("b heard %+v", e)
	}
}
