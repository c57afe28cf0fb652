package connect

import (
	"context"
	"strings"

	"github.com/zapgate/caddy-zapier/gateway"
)

// Zapier's documented success redirect carries no state
// (callback?authentication_id=12345&service=SlackAPI), so the callback
// finds its flow from what the browser itself carries: the flow cookie
// lists the flows this browser started (at most a few), each bound to the
// user, the app and return_to server-side. Which of them the answer belongs
// to is decided here.

// PendingFlow is a redirect flow this browser started, still open: its
// cookie entry matched, it is unexpired, unspent and the caller's.
type PendingFlow struct {
	ID string
	// App is the app as Connect names it (the app key, e.g. SlackCLIAPI),
	// or its UUID when no key is known.
	App     string
	AppUUID string
}

// ServiceNames reports whether Zapier's service parameter names app. A key
// may come versioned (SlackCLIAPI@1.0.0) and names the same app. When the
// flow only knows the app's UUID there is no key to compare: the
// server-side lookup, which checks the connection's app UUID, decides.
func ServiceNames(service, app string) bool {
	if service == "" || gateway.IsUUID(app) {
		return true
	}
	key, _, _ := strings.Cut(service, "@")
	appKey, _, _ := strings.Cut(app, "@")
	return key == appKey
}

// Candidates keeps the flows service may belong to, newest first (flows
// are given oldest first, as the cookie lists them).
func Candidates(flows []PendingFlow, service string) []PendingFlow {
	out := make([]PendingFlow, 0, len(flows))
	for i := len(flows) - 1; i >= 0; i-- {
		if ServiceNames(service, flows[i].App) {
			out = append(out, flows[i])
		}
	}
	return out
}

// Choose picks the flow a connection id completes among candidates (newest
// first). One candidate is the answer. With several (two tabs, two apps,
// and no service to tell them apart), owns is asked, once per distinct app
// and newest first, whether the id is one of the user's connections to
// that app; the first that owns it wins. When none does, the newest is
// returned: its verification then refuses the id, and the user lands on
// that flow's return_to with the error. ok is false only without
// candidates.
func Choose(ctx context.Context, candidates []PendingFlow, owns func(ctx context.Context, appUUID string) (bool, error)) (PendingFlow, bool, error) {
	if len(candidates) == 0 {
		return PendingFlow{}, false, nil
	}
	if len(candidates) == 1 {
		return candidates[0], true, nil
	}
	asked := map[string]bool{}
	for _, f := range candidates {
		if asked[f.AppUUID] {
			continue
		}
		asked[f.AppUUID] = true
		yes, err := owns(ctx, f.AppUUID)
		if err != nil {
			return PendingFlow{}, false, err
		}
		if yes {
			return f, true, nil
		}
	}
	return candidates[0], true, nil
}
