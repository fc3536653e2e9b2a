// Package e2e drives the built commands the way an operator does: create a
// gatherer, start nodes, install the munin plugin with the install script,
// read it through the real munin-run, kill and restart the gatherer. The
// original's gatherer was broken for years by a change to how its command
// started the service, and no test noticed because tests built the service
// directly; these tests only run what a user runs.
package e2e
