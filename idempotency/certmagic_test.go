package idempotency_test

import (
	"context"
	"errors"
	"testing"

	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/idempotency"
)

// The package does not import certmagic; only this test does, to hold it to
// its promise that Caddy's storage satisfies Storage.
var (
	_ idempotency.Storage = certmagic.Storage(nil)
	_ idempotency.Storage = (*certmagic.FileStorage)(nil)
)

// A run against certmagic's own FileStorage (without contention: its Lock
// polls every second).
func TestCertmagicFileStorage(t *testing.T) {
	st := &certmagic.FileStorage{Path: t.TempDir()}
	s, err := idempotency.New(idempotency.Config{Storage: st, Prefix: "zapier/idempotency"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	if n, err := s.Sweep(ctx); n != 0 || err != nil {
		t.Fatalf("Sweep on empty storage = %d, %v", n, err)
	}
	out, err := s.Begin(ctx, "tenant-1", "k1", []byte("body"))
	if err != nil || out.Kind != idempotency.Proceed {
		t.Fatalf("Begin = %v, %v; want Proceed", out.Kind, err)
	}
	resp := idempotency.Response{Status: 201, Header: map[string]string{"Location": "/runs/r1"}, Body: []byte(`{"id":"r1"}`)}
	if err := out.Finish(ctx, resp); err != nil {
		t.Fatal(err)
	}
	again, err := s.Begin(ctx, "tenant-1", "k1", []byte("body"))
	if err != nil || again.Kind != idempotency.Replay || string(again.Response.Body) != `{"id":"r1"}` {
		t.Fatalf("Begin = %v %+v, %v; want the Replay", again.Kind, again.Response, err)
	}
	if _, err := s.Begin(ctx, "tenant-1", "k1", []byte("other")); !errors.Is(err, idempotency.ErrKeyReused) {
		t.Fatalf("err = %v, want ErrKeyReused", err)
	}

	other, err := s.Begin(ctx, "tenant-1", "k2", []byte("body"))
	if err != nil || other.Kind != idempotency.Proceed {
		t.Fatalf("Begin = %v, %v; want Proceed", other.Kind, err)
	}
	if err := other.Abandon(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Sweep(ctx); n != 0 || err != nil {
		t.Fatalf("Sweep = %d, %v; nothing has expired", n, err)
	}
	keys, err := st.List(ctx, "zapier/idempotency", false)
	if err != nil || len(keys) != 1 {
		t.Fatalf("stored %v, %v; want the one done record", keys, err)
	}
}
