package caddymodule

import (
	"context"
	"fmt"
	"net/http"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// The connection routes only ever touch the caller's own records: the
// storage key is made of the caller's identity, so there is no id by which
// another user's record could be named.

func (h *Connect) serveList(w http.ResponseWriter, r *http.Request, key tokencache.Key) error {
	recs, err := h.store.List(r.Context(), key.Tenant, key.User)
	if err != nil {
		return failConnect(w, r, err)
	}
	for i := range recs {
		recs[i] = recs[i].Public()
	}
	writeConnectJSON(w, http.StatusOK, struct {
		Data []connect.Record `json:"data"`
	}{recs})
	return nil
}

// serveGet answers one of the caller's accounts of the app: the one
// ?connection_id= names, else the default (most recently verified).
func (h *Connect) serveGet(w http.ResponseWriter, r *http.Request, key tokencache.Key, app string) error {
	ids, err := h.app.resolveApp(r.Context(), key, h.apps, app)
	if err != nil {
		return failConnect(w, r, err)
	}
	connID, aerr := connectionIDParam(r)
	if aerr != nil {
		return failConnect(w, r, aerr)
	}
	rec, err := h.store.Get(r.Context(), key.Tenant, key.User, ids.uuid, connID)
	if err != nil {
		return failConnect(w, r, err)
	}
	if rec == nil {
		return failConnect(w, r, errNoConnection(ids))
	}
	writeConnectJSON(w, http.StatusOK, rec.Public())
	return nil
}

// connectionIDParam reads the optional ?connection_id= naming one of
// several accounts of an app.
func connectionIDParam(r *http.Request) (string, *gateway.Error) {
	q := r.URL.Query()
	if len(q["connection_id"]) > 1 {
		return "", gateway.BadRequest("connection_id must appear at most once")
	}
	id := q.Get("connection_id")
	if id != "" && !connect.ValidConnectionID(id) {
		return "", gateway.BadRequest("connection_id is not a connection id")
	}
	return id, nil
}

// disconnectAnswer is DELETE connections/{app}'s answer: what was
// forgotten, and what became of the authentication at Zapier.
type disconnectAnswer struct {
	Deleted      bool   `json:"deleted"`
	ConnectionID string `json:"connection_id"`
	App          string `json:"app"`
	// Upstream is deleted (Zapier deleted the authentication),
	// already_gone (Zapier did not have it any more) or kept
	// (keep_upstream: only the gateway's record was forgotten).
	Upstream string `json:"upstream"`
}

// serveDelete disconnects one of the caller's accounts of the app (the one
// ?connection_id= names; without it, the app's only one): it deletes the
// authentication at Zapier (unless keep_upstream), then forgets the record.
// When Zapier fails, the record stays, so the same DELETE finishes the job
// later.
func (h *Connect) serveDelete(w http.ResponseWriter, r *http.Request, key tokencache.Key, app string) error {
	ids, err := h.app.resolveApp(r.Context(), key, h.apps, app)
	if err != nil {
		return failConnect(w, r, err)
	}
	connID, aerr := connectionIDParam(r)
	if aerr != nil {
		return failConnect(w, r, aerr)
	}
	ctx := r.Context()
	recs, err := h.store.Accounts(ctx, key.Tenant, key.User, ids.uuid)
	if err != nil {
		return failConnect(w, r, err)
	}
	if connID == "" && len(recs) > 1 {
		return failConnect(w, r, &gateway.Error{Status: http.StatusConflict, Code: "connection_ambiguous",
			Message: fmt.Sprintf("the user has %d accounts of app %s: name one with ?connection_id=", len(recs), ids.connect)})
	}
	var rec *connect.Record
	for i := range recs {
		if connID == "" || recs[i].ConnectionID == connID {
			rec = &recs[i]
			break
		}
	}
	if rec == nil {
		return failConnect(w, r, errNoConnection(ids))
	}
	upstream := upstreamKept
	if !h.KeepUpstream {
		if upstream, err = h.app.deleteAuthentication(ctx, key, rec.ConnectionID); err != nil {
			return failConnect(w, r, err)
		}
	}
	removed, err := h.store.Remove(ctx, key.Tenant, key.User, ids.uuid, rec.ConnectionID)
	if err != nil {
		return failConnect(w, r, err)
	}
	writeConnectJSON(w, http.StatusOK, disconnectAnswer{Deleted: len(removed) > 0, ConnectionID: rec.ConnectionID, App: rec.App, Upstream: upstream})
	return nil
}

// What became of an authentication at Zapier.
const (
	upstreamDeleted     = "deleted"
	upstreamAlreadyGone = "already_gone"
	upstreamKept        = "kept"
)

// deleteAuthentication deletes one of the identity's authentications at
// Zapier with its own access token.
func (a *App) deleteAuthentication(ctx context.Context, key tokencache.Key, id string) (string, error) {
	var gone bool
	err := a.callAPI(ctx, key, func(ctx context.Context, access string) (err error) {
		gone, err = a.client.DeleteAuthentication(ctx, a.APIURL, access, id)
		return err
	})
	if _, ok := zapierapi.AsError(err); ok {
		return "", gateway.CallError(err)
	}
	if err != nil {
		return "", err
	}
	if gone {
		return upstreamAlreadyGone, nil
	}
	return upstreamDeleted, nil
}

func errNoConnection(ids appIDs) *gateway.Error {
	return &gateway.Error{Status: http.StatusNotFound, Code: "connection_missing",
		Message: "no stored connection for app " + ids.connect}
}
