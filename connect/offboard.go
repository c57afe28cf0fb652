package connect

import (
	"context"
	"fmt"
	"sort"

	"github.com/zapgate/caddy-zapier/gateway"
)

// Offboarding forgets a user, or a whole tenant, through every store the
// gateway.Registry holds; this is the connections' part. It is idempotent:
// a connection whose authentication Zapier failed to delete keeps its record
// and is reported, and running offboarding again finishes the job.

// Connection is a stored connection as offboarding sees it.
type Connection struct {
	Tenant, User string
	App, AppUUID string
	ConnectionID string
}

// Gateway is what offboarding needs of the gateway.
type Gateway interface {
	// Connections lists the stored connections of the tenant, or of one
	// of its users when user is not empty.
	Connections(ctx context.Context, tenant, user string) ([]Connection, error)
	// DeleteUpstream deletes the connection's authentication at Zapier,
	// with its owner's access token; gone reports that Zapier no longer
	// had it.
	DeleteUpstream(ctx context.Context, c Connection) (gone bool, err error)
	// Forget deletes the stored record of the connection.
	Forget(ctx context.Context, c Connection) error
}

// ConnectionOutcome is one connection offboarding dealt with.
type ConnectionOutcome struct {
	User         string `json:"user"`
	App          string `json:"app"`
	ConnectionID string `json:"connection_id"`
	// Upstream is deleted, already_gone or kept; empty when it failed.
	Upstream string `json:"upstream,omitempty"`
	Error    string `json:"error,omitempty"`
}

// What became of an authentication at Zapier.
const (
	UpstreamDeleted     = "deleted"
	UpstreamAlreadyGone = "already_gone"
	UpstreamKept        = "kept"
)

// OffboardStore is the stored connections as offboarding walks them (a
// gateway.UserStore, in gateway.PhaseUpstream: deleting at Zapier needs
// the users' access tokens). Each connection's authentication is deleted
// at Zapier first (unless KeepUpstream) and its record only once that
// succeeded, so a failure leaves something to retry. The report's Items
// are the []ConnectionOutcome.
type OffboardStore struct{ G Gateway }

// StoreName implements gateway.UserStore.
func (OffboardStore) StoreName() string { return "connections" }

// Forget implements gateway.UserStore.
func (s OffboardStore) Forget(ctx context.Context, sc gateway.Scope) (gateway.StoreReport, error) {
	rep := gateway.StoreReport{}
	outcomes := []ConnectionOutcome{}
	conns, err := s.G.Connections(ctx, sc.Tenant, sc.User)
	if err != nil {
		return rep, err
	}
	sort.Slice(conns, func(i, j int) bool {
		if conns[i].User != conns[j].User {
			return conns[i].User < conns[j].User
		}
		return conns[i].AppUUID < conns[j].AppUUID
	})
	for _, c := range conns {
		out := ConnectionOutcome{User: c.User, App: c.App, ConnectionID: c.ConnectionID, Upstream: UpstreamKept}
		if !sc.KeepUpstream {
			gone, err := s.G.DeleteUpstream(ctx, c)
			switch {
			case err != nil:
				out.Upstream, out.Error = "", err.Error()
			case gone:
				out.Upstream = UpstreamAlreadyGone
			default:
				out.Upstream = UpstreamDeleted
				rep.Upstream++
			}
		}
		if out.Error == "" {
			if err := s.G.Forget(ctx, c); err != nil {
				out.Error = err.Error()
			}
		}
		if out.Error != "" {
			rep.Failed++
		} else {
			rep.Deleted++
		}
		outcomes = append(outcomes, out)
	}
	rep.Items = outcomes
	if rep.Failed > 0 {
		return rep, fmt.Errorf("%d of %d connections could not be forgotten; run offboarding again", rep.Failed, len(conns))
	}
	return rep, nil
}

// Owners lists the identities holding connections in the scope: the users
// of a tenant that stores naming users only by keyed hashes cannot find.
func Owners(ctx context.Context, g Gateway, sc gateway.Scope) ([]gateway.Identity, error) {
	conns, err := g.Connections(ctx, sc.Tenant, sc.User)
	if err != nil {
		return nil, err
	}
	seen := map[gateway.Identity]bool{}
	var out []gateway.Identity
	if sc.User != "" {
		seen[gateway.Identity{Tenant: sc.Tenant, User: sc.User}] = true
		out = append(out, gateway.Identity{Tenant: sc.Tenant, User: sc.User})
	}
	for _, c := range conns {
		if id := (gateway.Identity{Tenant: c.Tenant, User: c.User}); !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out, nil
}

// Identity is one (tenant, user).
type Identity = gateway.Identity

// StoreGateway is the Gateway over a connection store: connections listed
// from it (one user's by keyed name, a tenant's by sealed owners), their
// authentications deleted at Zapier through the Caller with each owner's
// own token, and their records removed.
type StoreGateway struct {
	Store  *Store
	Caller *gateway.Caller
}

// Connections implements Gateway.
func (g StoreGateway) Connections(ctx context.Context, tenant, user string) ([]Connection, error) {
	var out []Connection
	if user != "" {
		recs, err := g.Store.List(ctx, tenant, user)
		if err != nil {
			return nil, err
		}
		for _, rec := range recs {
			out = append(out, Connection{Tenant: tenant, User: user, App: rec.App, AppUUID: rec.AppUUID, ConnectionID: rec.ConnectionID})
		}
		return out, nil
	}
	owned, err := g.Store.OwnedBy(ctx, tenant)
	if err != nil {
		return nil, err
	}
	for _, o := range owned {
		out = append(out, Connection{Tenant: o.Tenant, User: o.User, App: o.Record.App, AppUUID: o.Record.AppUUID, ConnectionID: o.Record.ConnectionID})
	}
	return out, nil
}

// DeleteUpstream implements Gateway.
func (g StoreGateway) DeleteUpstream(ctx context.Context, c Connection) (bool, error) {
	upstream, err := DeleteAuthentication(ctx, g.Caller, gateway.Identity{Tenant: c.Tenant, User: c.User}, c.ConnectionID)
	return upstream == UpstreamAlreadyGone, err
}

// Forget implements Gateway.
func (g StoreGateway) Forget(ctx context.Context, c Connection) error {
	_, err := g.Store.Remove(ctx, c.Tenant, c.User, c.AppUUID, c.ConnectionID)
	return err
}
