//go:build race

package authproxy

const raceEnabled = true
