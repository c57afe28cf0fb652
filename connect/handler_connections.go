package connect

import (
	"context"
	"fmt"
	"net/http"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// The connection routes only ever touch the caller's own records: the
// storage key is made of the caller's identity, so there is no id by which
// another user's record could be named.

func (h *Handler) serveList(w http.ResponseWriter, r *http.Request, id gateway.Identity) error {
	recs, err := h.cfg.Store.List(r.Context(), id.Tenant, id.User)
	if err != nil {
		return gateway.Fail(w, r, err)
	}
	for i := range recs {
		recs[i] = recs[i].Public()
	}
	gateway.WriteJSON(w, http.StatusOK, struct {
		Data []Record `json:"data"`
	}{recs})
	return nil
}

// serveGet answers one of the caller's accounts of the app: the one
// ?connection_id= names, else the default (most recently verified).
func (h *Handler) serveGet(w http.ResponseWriter, r *http.Request, id gateway.Identity, app string) error {
	ids, err := h.cfg.Apps(r.Context(), id, app)
	if err != nil {
		return gateway.Fail(w, r, err)
	}
	connID, aerr := connectionIDParam(r)
	if aerr != nil {
		return gateway.Fail(w, r, aerr)
	}
	rec, err := h.cfg.Store.Get(r.Context(), id.Tenant, id.User, ids.UUID, connID)
	if err != nil {
		return gateway.Fail(w, r, err)
	}
	if rec == nil {
		return gateway.Fail(w, r, errNoConnection(ids))
	}
	gateway.WriteJSON(w, http.StatusOK, rec.Public())
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
	if id != "" && !ValidConnectionID(id) {
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
func (h *Handler) serveDelete(w http.ResponseWriter, r *http.Request, id gateway.Identity, app string) error {
	ids, err := h.cfg.Apps(r.Context(), id, app)
	if err != nil {
		return gateway.Fail(w, r, err)
	}
	connID, aerr := connectionIDParam(r)
	if aerr != nil {
		return gateway.Fail(w, r, aerr)
	}
	ctx := r.Context()
	recs, err := h.cfg.Store.Accounts(ctx, id.Tenant, id.User, ids.UUID)
	if err != nil {
		return gateway.Fail(w, r, err)
	}
	if connID == "" && len(recs) > 1 {
		return gateway.Fail(w, r, &gateway.Error{Status: http.StatusConflict, Code: "connection_ambiguous",
			Message: fmt.Sprintf("the user has %d accounts of app %s: name one with ?connection_id=", len(recs), ids.Key)})
	}
	var rec *Record
	for i := range recs {
		if connID == "" || recs[i].ConnectionID == connID {
			rec = &recs[i]
			break
		}
	}
	if rec == nil {
		return gateway.Fail(w, r, errNoConnection(ids))
	}
	upstream := UpstreamKept
	if !h.cfg.KeepUpstream {
		if upstream, err = DeleteAuthentication(ctx, h.cfg.Caller, id, rec.ConnectionID); err != nil {
			return gateway.Fail(w, r, err)
		}
	}
	removed, err := h.cfg.Store.Remove(ctx, id.Tenant, id.User, ids.UUID, rec.ConnectionID)
	if err != nil {
		return gateway.Fail(w, r, err)
	}
	gateway.WriteJSON(w, http.StatusOK, disconnectAnswer{Deleted: len(removed) > 0, ConnectionID: rec.ConnectionID, App: rec.App, Upstream: upstream})
	return nil
}

// DeleteAuthentication deletes one of id's authentications at Zapier with
// its own access token: UpstreamDeleted, or UpstreamAlreadyGone when Zapier
// no longer had it. Zapier's failures come back as the gateway's errors.
func DeleteAuthentication(ctx context.Context, c *gateway.Caller, id gateway.Identity, connID string) (string, error) {
	var gone bool
	err := c.Call(ctx, id, func(ctx context.Context, access string) (err error) {
		gone, err = c.Client.DeleteAuthentication(ctx, c.APIURL, access, connID)
		return err
	})
	if _, ok := zapierapi.AsError(err); ok {
		return "", gateway.CallError(err)
	}
	if err != nil {
		return "", err
	}
	if gone {
		return UpstreamAlreadyGone, nil
	}
	return UpstreamDeleted, nil
}

func errNoConnection(ids gateway.App) *gateway.Error {
	return &gateway.Error{Status: http.StatusNotFound, Code: "connection_missing",
		Message: "no stored connection for app " + ids.Key}
}
