package caddymodule

import (
	"context"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/internal/sweep"
)

// stateKeeper is connect's state keeper with its background sweep: after a
// spend, at most once per state TTL per gateway, bounded by bg, which ends
// with the config.
type stateKeeper struct {
	*connect.StateKeeper
	bg      context.Context
	sweeper sweep.Sweeper
}

func newStateKeeper(bg context.Context, s certmagic.Storage, ttl time.Duration) *stateKeeper {
	return &stateKeeper{StateKeeper: connect.NewStateKeeper(s, ttl), bg: bg}
}

// spend spends st (connect.StateKeeper.Spend) and then maybe sweeps.
func (k *stateKeeper) spend(ctx context.Context, st *connect.State) error {
	if err := k.Spend(ctx, st); err != nil {
		return err
	}
	k.sweeper.Maybe(k.bg, time.Now(), k.TTL(), k.Sweep)
	return nil
}

// sweptStates is the keeper as connect.Handler's States: a spend may sweep.
type sweptStates struct{ *stateKeeper }

func (s sweptStates) Spend(ctx context.Context, st *connect.State) error { return s.spend(ctx, st) }
