//go:build race

package shmcast

const raceEnabled = true
