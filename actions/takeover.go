package actions

import "time"

// Calls a POST run may make before it creates the run, each taking up to
// the attempts of one API call: the token exchange (and a second one after
// a 401), the app and connection lookups and the fresh action id.
const callsBeforeCreate = 6

// TakeoverMargin is added to PendingTakeover's sum, for clock skew between
// sidecars and slow storage.
const TakeoverMargin = time.Minute

// PendingTakeover is how long a POST run's Idempotency-Key stays reserved
// for its first request before a duplicate may take it over (only while no
// create call was made; a key whose create call was made is never taken
// over). It exceeds the longest POST run can take: the longest wait
// (MaxRunWait), the request budget's max_wait, and every call before the
// create at its per-attempt timeout times its attempts, plus a margin.
func PendingTakeover(budgetMaxWait, callTimeout time.Duration, attempts int) time.Duration {
	attempts = max(attempts, 1)
	return MaxRunWait + max(budgetMaxWait, 0) + callsBeforeCreate*time.Duration(attempts)*max(callTimeout, 0) + TakeoverMargin
}
