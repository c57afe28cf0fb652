package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/zapierapi"
)

// A caller queued behind max_inflight gives up at its own deadline, as a
// timeout, and is not counted as an exchange made; one that runs is.
func TestExchangerQueuesWithinInflightAndObserves(t *testing.T) {
	var done []string
	e := &Exchanger{Inflight: make(chan struct{}, 1), Breaker: zapierapi.NewBreaker(zapierapi.BreakerConfig{}),
		Done: func(_ Identity, kind string, err error, _ time.Duration) { done = append(done, kind) }}
	id := Identity{Tenant: "t", User: "u"}
	e.Inflight <- struct{}{} // the only slot is taken
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := e.Run(ctx, id, "connect_token", func(context.Context) (zapierapi.Token, error) {
		t.Fatal("ran without a slot")
		return zapierapi.Token{}, nil
	})
	if zerr, ok := zapierapi.AsError(err); !ok || zerr.Kind != zapierapi.KindTimeout {
		t.Fatalf("queued past its deadline: %v", err)
	}
	<-e.Inflight
	tok, err := e.Run(context.Background(), id, "connect_token", func(context.Context) (zapierapi.Token, error) {
		return zapierapi.Token{AccessToken: "x"}, nil
	})
	if err != nil || tok.AccessToken != "x" || len(done) != 1 || len(e.Inflight) != 0 {
		t.Fatalf("run: %+v %v, observed %v, slots held %d", tok, err, done, len(e.Inflight))
	}
	e.Mint = func(context.Context, Identity) (string, error) { return "", errors.New("no key") }
	if _, err := e.Access(context.Background(), id); err == nil || len(done) != 2 || done[1] != KindAccess {
		t.Fatalf("access with a failing mint: %v, observed %v", err, done)
	}
}
