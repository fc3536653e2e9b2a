package gatherer

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"

	"capstats/statsfile"
)

// FindNode returns the index of the node that who names: a tub ID, or a
// nickname that exactly one node has.
func FindNode(nodes []statsfile.Node, who string) (int, error) {
	var byNick []int
	for i, n := range nodes {
		if n.TubID == who {
			return i, nil
		}
		if n.Nickname == who {
			byNick = append(byNick, i)
		}
	}
	switch len(byNick) {
	case 0:
		return -1, fmt.Errorf("no node with tub ID or nickname %q", who)
	case 1:
		return byNick[0], nil
	}
	ids := make([]string, len(byNick))
	for i, j := range byNick {
		ids[i] = nodes[j].TubID
	}
	return -1, fmt.Errorf("%d nodes are called %q (tub IDs %s): give the tub ID", len(byNick), who, strings.Join(ids, ", "))
}

// Forget removes the node that who names (see FindNode) and writes the
// stats file. A connected node is refused: it is not decommissioned, and
// would only be added again.
func (g *Gatherer) Forget(who string) (statsfile.Node, error) {
	g.mu.Lock()
	entries := make([]statsfile.Node, len(g.order))
	for i, id := range g.order {
		entries[i] = g.nodes[id].entry
	}
	i, err := FindNode(entries, who)
	if err != nil {
		g.mu.Unlock()
		return statsfile.Node{}, err
	}
	n := g.nodes[g.order[i]]
	if n.peer != nil {
		g.mu.Unlock()
		return statsfile.Node{}, fmt.Errorf("node %q (%s) is connected: stop it first, or it is added again", n.entry.Nickname, n.entry.TubID)
	}
	g.removeLocked(n.entry.TubID)
	g.mu.Unlock()
	g.cfg.Logger.Info("node forgotten", "nickname", n.entry.Nickname, "tubid", n.entry.TubID)
	return n.entry, g.Write()
}

// removeLocked drops the node with tub ID id from memory; the next write
// leaves it out of the file. g.mu is held.
func (g *Gatherer) removeLocked(id string) {
	if g.cfg.OnForget != nil {
		g.cfg.OnForget(id)
	}
	delete(g.nodes, id)
	if i := slices.Index(g.order, id); i >= 0 {
		g.order = slices.Delete(g.order, i, i+1)
	}
}

// forgetInFile removes a node from the stats file of a gatherer that is not
// running.
func forgetInFile(path, who string) (statsfile.Node, error) {
	f, err := statsfile.Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		return statsfile.Node{}, fmt.Errorf("no stats file %s: this gatherer has seen no node yet", path)
	}
	if err != nil {
		return statsfile.Node{}, err
	}
	i, err := FindNode(f.Nodes, who)
	if err != nil {
		return statsfile.Node{}, fmt.Errorf("%w in %s", err, path)
	}
	n := f.Nodes[i]
	f.Nodes = slices.Delete(f.Nodes, i, i+1)
	err = statsfile.WriteFile(path, f)
	keepOwner(filepath.Dir(path), path)
	return n, err
}

// ForgetNode removes a decommissioned node from the gatherer in dir: through
// the running gatherer's control socket when it runs (so that its next write
// does not bring the node back), or from stats.json when it is stopped.
// live says which.
func ForgetNode(dir, who string) (n statsfile.Node, live bool, err error) {
	if err := CheckBasedir(dir); err != nil {
		return statsfile.Node{}, false, err
	}
	rep, err := callControl(dir, controlRequest{Op: opForget, Node: who})
	if err == nil {
		return statsfile.Node{TubID: rep.TubID, Nickname: rep.Nickname}, true, nil
	}
	if !errors.Is(err, ErrNotRunning) {
		return statsfile.Node{}, false, err
	}
	err = whileStopped(dir, func() (err error) {
		n, err = forgetInFile(filepath.Join(dir, StatsFile), who)
		return err
	})
	return n, false, err
}
