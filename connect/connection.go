package connect

import (
	"encoding/json"
	"strings"

	"github.com/zapgate/caddy-zapier/zapierapi"
)

// Verifying a connection id: the gateway lists the user's authentications
// for the app at Zapier (GET /v2/authentications, with the user's own
// token) and accepts the id only when it is there, under that app.

// ConnectionIDFromJSON reads a connection id (auth_id, connection_id) as a
// string or an integer: Connect's postMessage carries a number, the API a
// string; both compare as strings.
func ConnectionIDFromJSON(raw json.RawMessage) (string, bool) {
	raw = json.RawMessage(strings.TrimSpace(string(raw)))
	var id string
	if len(raw) > 0 && raw[0] == '"' {
		if json.Unmarshal(raw, &id) != nil {
			return "", false
		}
	} else {
		id = string(raw)
		for i := 0; i < len(id); i++ {
			if id[i] < '0' || id[i] > '9' {
				return "", false
			}
		}
	}
	return id, ValidConnectionID(id)
}

// FindConnection returns the authentication with id for the app, or nil:
// the same id listed under another app is not the user's connection to
// this one (Zapier is asked for one app's list, but it is not trusted to
// have filtered it).
func FindConnection(auths []zapierapi.Authentication, id, appUUID string) *zapierapi.Authentication {
	for i := range auths {
		if auths[i].ID == id && auths[i].App == appUUID {
			return &auths[i]
		}
	}
	return nil
}
