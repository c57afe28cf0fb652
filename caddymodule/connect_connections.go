package caddymodule

import (
	"net/http"

	"github.com/zapgate/caddy-zapier/tokencache"
)

// The connection routes only ever touch the caller's own records: the
// storage key is made of the caller's identity, so there is no id by which
// another user's record could be named.

func (h *Connect) serveList(w http.ResponseWriter, r *http.Request, key tokencache.Key) error {
	recs, err := h.store.list(r.Context(), key.Tenant, key.User)
	if err != nil {
		return failConnect(w, r, err)
	}
	for i := range recs {
		recs[i] = recs[i].public()
	}
	writeConnectJSON(w, http.StatusOK, struct {
		Data []connectionRecord `json:"data"`
	}{recs})
	return nil
}

func (h *Connect) serveGet(w http.ResponseWriter, r *http.Request, key tokencache.Key, app string) error {
	ids, aerr := h.apps.resolve(app)
	if aerr != nil {
		return failConnect(w, r, aerr)
	}
	rec, err := h.store.get(r.Context(), key.Tenant, key.User, ids.uuid)
	if err != nil {
		return failConnect(w, r, err)
	}
	if rec == nil {
		return failConnect(w, r, errNoConnection(ids))
	}
	writeConnectJSON(w, http.StatusOK, rec.public())
	return nil
}

// serveDelete forgets the caller's connection; the authentication itself
// stays at Zapier.
func (h *Connect) serveDelete(w http.ResponseWriter, r *http.Request, key tokencache.Key, app string) error {
	ids, aerr := h.apps.resolve(app)
	if aerr != nil {
		return failConnect(w, r, aerr)
	}
	found, err := h.store.remove(r.Context(), key.Tenant, key.User, ids.uuid)
	if err != nil {
		return failConnect(w, r, err)
	}
	if !found {
		return failConnect(w, r, errNoConnection(ids))
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func errNoConnection(ids appIDs) *apiError {
	return &apiError{Status: http.StatusNotFound, Code: "connection_missing",
		Message: "no stored connection for app " + ids.connect}
}
