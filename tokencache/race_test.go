//go:build race

package tokencache

const raceEnabled = true
