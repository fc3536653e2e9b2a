// Package reliability holds the fault and abuse tests of capstats: real
// gatherer processes killed mid-write, restarted, starved of disk, and fed
// hostile input by providers over real TLS on 127.0.0.1. It has no code of
// its own beyond test helpers; see RELIABILITY.md for what was tried and
// what held.
package reliability
