package connect

import "github.com/zapgate/caddy-zapier/zapierapi"

// The health of a stored connection, as the background sweep last found
// it at Zapier (GET /v2/authentications).
const (
	StatusOK      = "ok"      // listed, not expired
	StatusExpired = "expired" // listed with is_expired: reconnect it
	StatusMissing = "missing" // not listed any more (deleted at Zapier)
)

// Health classifies stored connection ids of one app against Zapier's
// listing of the user's authentications for that app. An id listed under
// another app counts as missing.
func Health(stored []string, listed []zapierapi.Authentication, appUUID string) map[string]string {
	byID := make(map[string]zapierapi.Authentication, len(listed))
	for _, a := range listed {
		if a.App == appUUID {
			byID[a.ID] = a
		}
	}
	out := make(map[string]string, len(stored))
	for _, id := range stored {
		a, ok := byID[id]
		switch {
		case !ok:
			out[id] = StatusMissing
		case a.IsExpired:
			out[id] = StatusExpired
		default:
			out[id] = StatusOK
		}
	}
	return out
}

// Transition says what a change of status means for the partner: the
// event to send ("" for none). Becoming ok again is silent: the reconnect
// that caused it already announced itself.
func Transition(before, after string) string {
	if before == after || after == StatusOK {
		return ""
	}
	if before == "" && after == StatusOK {
		return ""
	}
	return after
}
