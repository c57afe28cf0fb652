package connect

import (
	"context"
	"errors"
	"sort"
)

// Offboarding forgets a user, or a whole tenant: every stored connection
// and its authentication at Zapier, the cached access tokens, and the
// pending connect flows and action runs. It is idempotent: a connection
// whose authentication Zapier failed to delete keeps its record and is
// reported, and running offboarding again finishes the job.

// Connection is a stored connection as offboarding sees it.
type Connection struct {
	Tenant, User string
	App, AppUUID string
	ConnectionID string
}

// Identity is one (tenant, user).
type Identity struct{ Tenant, User string }

// Forgotten is what ForgetIdentities dropped.
type Forgotten struct {
	TokensPurged int `json:"tokens_purged"`
	PendingFlows int `json:"pending_flows_forgotten"`
	Runs         int `json:"runs_forgotten"`
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
	// ForgetIdentities purges the cached tokens (on every gateway) and
	// forgets the pending flows and runs of the tenant (all of it when
	// user is empty) and of the identities named.
	ForgetIdentities(ctx context.Context, tenant, user string, ids []Identity) (Forgotten, error)
}

// OffboardRequest names whom to forget.
type OffboardRequest struct {
	Tenant string
	User   string // empty: the whole tenant
	// KeepUpstream leaves the authentications at Zapier.
	KeepUpstream bool
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

// OffboardReport is offboarding's answer.
type OffboardReport struct {
	Tenant string `json:"tenant"`
	User   string `json:"user,omitempty"`
	// Complete is true when nothing is left to do: running it again would
	// find nothing.
	Complete    bool                `json:"complete"`
	Connections []ConnectionOutcome `json:"connections"`
	Failed      int                 `json:"failed"`
	Forgotten
}

// What became of an authentication at Zapier.
const (
	UpstreamDeleted     = "deleted"
	UpstreamAlreadyGone = "already_gone"
	UpstreamKept        = "kept"
)

// ErrNoTenant is returned for a request without a tenant.
var ErrNoTenant = errors.New("offboarding needs a tenant")

// Offboard forgets req's identity or tenant through g. Each connection's
// authentication is deleted at Zapier first (unless KeepUpstream) and its
// record only once that succeeded, so a failure leaves something to retry.
// Tokens, flows and runs are forgotten last, since deleting at Zapier
// needs the users' access tokens. An error is returned only when nothing
// could be listed; partial failures are in the report.
func Offboard(ctx context.Context, g Gateway, req OffboardRequest) (OffboardReport, error) {
	if req.Tenant == "" {
		return OffboardReport{}, ErrNoTenant
	}
	rep := OffboardReport{Tenant: req.Tenant, User: req.User, Connections: []ConnectionOutcome{}}
	conns, err := g.Connections(ctx, req.Tenant, req.User)
	if err != nil {
		return rep, err
	}
	sort.Slice(conns, func(i, j int) bool {
		if conns[i].User != conns[j].User {
			return conns[i].User < conns[j].User
		}
		return conns[i].AppUUID < conns[j].AppUUID
	})
	seen := map[Identity]bool{}
	var ids []Identity
	if req.User != "" {
		seen[Identity{req.Tenant, req.User}] = true
		ids = append(ids, Identity{req.Tenant, req.User})
	}
	for _, c := range conns {
		if id := (Identity{c.Tenant, c.User}); !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
		out := ConnectionOutcome{User: c.User, App: c.App, ConnectionID: c.ConnectionID, Upstream: UpstreamKept}
		if !req.KeepUpstream {
			gone, err := g.DeleteUpstream(ctx, c)
			switch {
			case err != nil:
				out.Upstream, out.Error = "", err.Error()
			case gone:
				out.Upstream = UpstreamAlreadyGone
			default:
				out.Upstream = UpstreamDeleted
			}
		}
		if out.Error == "" {
			if err := g.Forget(ctx, c); err != nil {
				out.Error = err.Error()
			}
		}
		if out.Error != "" {
			rep.Failed++
		}
		rep.Connections = append(rep.Connections, out)
	}
	forgotten, err := g.ForgetIdentities(ctx, req.Tenant, req.User, ids)
	rep.Forgotten = forgotten
	if err != nil {
		rep.Failed++
		rep.Connections = append(rep.Connections, ConnectionOutcome{Error: "forgetting tokens, flows and runs: " + err.Error()})
	}
	rep.Complete = rep.Failed == 0
	return rep, nil
}
