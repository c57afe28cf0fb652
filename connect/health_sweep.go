package connect

import (
	"context"
	"errors"
	"io/fs"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// The connection health sweep: every health_check, one gateway of those
// sharing the storage re-checks every stored connection at Zapier (one
// GET /v2/authentications per user and app, one at a time, through the
// request budget like every call), marks each record ok, expired or
// missing, and announces a connection that expired or disappeared: a
// gateway event, and connection.expired / connection.missing to the
// partner's lifecycle events, so the partner can ask the user to reconnect
// before a run fails.

const (
	// DefaultHealthCheck is how often the sweep runs by default;
	// MinHealthCheck the shortest interval allowed.
	DefaultHealthCheck = time.Hour
	MinHealthCheck     = time.Second
	// healthSweepKey records when the last sweep started, healthSweepLock
	// guards claiming one.
	healthSweepKey  = "zapier/connect/health-sweep"
	healthSweepLock = "zapier_connect_health_sweep"

	// Gateway (Caddy) events. Data: identity (keyed hash), app, connection_id.
	EventConnectionExpiredGateway = "zapier_connection_expired"
	EventConnectionMissingGateway = "zapier_connection_missing"
	// The partner's lifecycle events.
	EventConnectionExpired = "connection.expired"
	EventConnectionMissing = "connection.missing"
)

// HealthLoop runs the sweep every interval until ctx ends, looking several
// times per interval whether this gateway should run it.
func (h *Handler) HealthLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(min(max(every/4, 100*time.Millisecond), time.Minute))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		claimed, err := h.claimHealthSweep(ctx, every)
		if err == nil && claimed {
			err = h.SweepHealth(ctx)
		}
		if err != nil && ctx.Err() == nil {
			h.logger.Warn("connection health sweep", zap.Error(err))
		}
	}
}

// claimHealthSweep reports whether this gateway runs the sweep now: none
// ran within every, on any gateway sharing the storage (and the storage
// has seen a gateway start at least every ago).
func (h *Handler) claimHealthSweep(ctx context.Context, every time.Duration) (bool, error) {
	storage := h.cfg.Storage
	if err := storage.Lock(ctx, healthSweepLock); err != nil {
		return false, err
	}
	defer func() { _ = storage.Unlock(context.WithoutCancel(ctx), healthSweepLock) }()
	now := time.Now()
	stamp := []byte(strconv.FormatInt(now.UnixNano(), 10))
	data, err := storage.Load(ctx, healthSweepKey)
	if errors.Is(err, fs.ErrNotExist) { // the first gateway starts the clock: the first sweep is one interval on
		return false, storage.Store(ctx, healthSweepKey, stamp)
	}
	if err != nil {
		return false, err
	}
	if last, perr := strconv.ParseInt(string(data), 10, 64); perr == nil && now.Sub(time.Unix(0, last)) < every {
		return false, nil
	}
	return true, storage.Store(ctx, healthSweepKey, stamp)
}

type healthGroup struct {
	id      gateway.Identity
	appUUID string
	app     string
	ids     []string
}

// SweepHealth checks every stored connection once.
func (h *Handler) SweepHealth(ctx context.Context) error {
	groups := map[[3]string]*healthGroup{}
	var order [][3]string
	err := h.cfg.Store.EachOwned(ctx, func(o *OwnedRecord) bool {
		g := [3]string{o.Tenant, o.User, o.Record.AppUUID}
		if groups[g] == nil {
			groups[g] = &healthGroup{id: gateway.Identity{Tenant: o.Tenant, User: o.User}, appUUID: o.Record.AppUUID, app: o.Record.App}
			order = append(order, g)
		}
		groups[g].ids = append(groups[g].ids, o.Record.ConnectionID)
		return ctx.Err() == nil
	}, nil)
	if err != nil {
		return err
	}
	var errs []error
	for _, g := range order {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		errs = append(errs, h.checkHealth(ctx, groups[g]))
	}
	return errors.Join(errs...)
}

// checkHealth checks one user's accounts of one app and records changes.
func (h *Handler) checkHealth(ctx context.Context, g *healthGroup) error {
	c := h.cfg.Caller
	var auths []zapierapi.Authentication
	err := c.Call(ctx, g.id, func(ctx context.Context, access string) (err error) {
		auths, err = c.Client.ListAuthentications(ctx, c.APIURL, access, g.appUUID)
		return err
	})
	if err != nil {
		return err // checked again next time; nothing is marked on a failure
	}
	status := Health(g.ids, auths, g.appUUID)
	now := time.Now().UTC()
	var changed []Record
	err = h.cfg.Store.Update(ctx, g.id.Tenant, g.id.User, g.appUUID, func(recs []Record) ([]Record, error) {
		for i := range recs {
			after, ok := status[recs[i].ConnectionID]
			if !ok {
				continue // stored since the listing
			}
			if Transition(recs[i].Status, after) != "" {
				changed = append(changed, recs[i])
				changed[len(changed)-1].Status = after
			}
			recs[i].Status, recs[i].Checked = after, now
		}
		return recs, nil
	})
	if err != nil {
		return err
	}
	for _, rec := range changed {
		h.announceHealth(g.id, rec)
	}
	return nil
}

func (h *Handler) announceHealth(id gateway.Identity, rec Record) {
	event, lifecycle := EventConnectionExpiredGateway, EventConnectionExpired
	if rec.Status == StatusMissing {
		event, lifecycle = EventConnectionMissingGateway, EventConnectionMissing
	}
	h.logger.Info("stored connection "+rec.Status, zap.String("identity", gateway.LogHash(id.Tenant, id.User)), zap.String("app", rec.App))
	if h.cfg.Emit != nil {
		h.cfg.Emit(event, func() map[string]any {
			return map[string]any{"identity": gateway.LogHash(id.Tenant, id.User), "app": rec.App, "connection_id": rec.ConnectionID}
		})
	}
	if h.cfg.Changed != nil {
		h.cfg.Changed(lifecycle, id.Tenant, id.User, rec)
	}
}
