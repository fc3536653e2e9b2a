// Package node is the node side of capstats: a Provider that any Go service
// embeds to count events and publish instantaneous stats, the built-in
// producers of the original Tahoe-LAFS stats system (uptime, load monitor,
// CPU monitor, storage, plus Go runtime stats), and a Node that keeps an
// outbound connection to a stats gatherer, hands it the provider and answers
// its polls.
//
// A Provider holds two namespaces. Counters are monotonic since the process
// started and are bumped with Count, which is lock-free and allocation-free
// for a name already seen. Stats are read from registered Producers at each
// snapshot; producers are merged in registration order and a later duplicate
// key wins, with a warning once per name. A producer that panics or does not
// answer in time is skipped and counted in the node.producer_errors counter;
// it never blocks a poll.
//
// Options are structs passed by value whose zero value is the default. The
// package logs to slog.Default() unless given a Logger, so that the
// embedding program's logging is honoured, with errors under the key "err".
// It changes nothing it was not asked to: the load monitor, for one, runs
// only with Config.LoadMonitor.
package node
