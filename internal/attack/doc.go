// Package attack is a hostile peer for tests: clients that do to a tub
// listener what an attacker on the open internet would, over real sockets,
// and report what the listener did to them. Nothing here is used outside
// tests; it exists so that each bound the gatherer promises is shown by an
// attack that would break it without that bound.
//
// preauth.go holds the attacks of a peer without the furl: pipelined fetches
// with wrong swiss numbers, idle TLS connections and silent TCP sockets.
package attack
