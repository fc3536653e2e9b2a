package node

import (
	"context"
	"io/fs"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"

	"capstats/internal/clock"
	"capstats/stats"
)

// diskStats is what statfs says about the file system holding a directory,
// in bytes.
type diskStats struct {
	Total          int64 // size of the file system
	FreeForRoot    int64 // free blocks, including those reserved for root
	FreeForNonroot int64 // free blocks available to unprivileged users
}

// StorageMonitor produces the storage_server.* stats of a directory:
// disk_total, disk_used, disk_avail, disk_free_for_root and
// disk_free_for_nonroot from statfs at each snapshot (null when statfs
// fails), and consumed, the bytes of regular files under the directory,
// counted by a background scan (null until the first scan ends) so that a
// poll never walks the tree.
type StorageMonitor struct {
	dir      string
	clock    clock.Clock
	log      *slog.Logger
	reserved int64
	interval time.Duration
	statfs   func(dir string) (diskStats, error) // statfs(2), or a test's

	consumed atomic.Int64 // -1 until the first scan completes

	run runner
}

// DefaultScanInterval is how often StorageMonitor rescans its directory.
const DefaultScanInterval = 5 * time.Minute

// StorageOptions configures a StorageMonitor; the zero value is usable.
type StorageOptions struct {
	// Logger receives scan errors; nil means slog.Default().
	Logger *slog.Logger
	// Reserved bytes are subtracted from the space available to
	// non-root users to give disk_avail (never below 0), as in the
	// original's reserved_space.
	Reserved int64
	// ScanInterval between rescans for consumed; 0 means
	// DefaultScanInterval.
	ScanInterval time.Duration
}

// NewStorageMonitor returns a stopped monitor of dir.
func NewStorageMonitor(dir string, opts StorageOptions) *StorageMonitor {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ScanInterval <= 0 {
		opts.ScanInterval = DefaultScanInterval
	}
	m := &StorageMonitor{
		dir: dir, clock: clock.System, log: opts.Logger, reserved: opts.Reserved,
		interval: opts.ScanInterval, statfs: statfs,
	}
	m.consumed.Store(-1)
	return m
}

// Start scans the directory now in the background and then once per scan
// interval; later calls do nothing.
func (m *StorageMonitor) Start() { m.run.start(m.loop) }

// Stop ends the background scans, abandoning one in progress, and waits.
func (m *StorageMonitor) Stop() { m.run.halt() }

func (m *StorageMonitor) loop(stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	failing := false
	for {
		start := m.clock.Now()
		_, err := m.Scan(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			m.log.Warn("storage scan incomplete", "dir", m.dir, "err", err)
		case err == nil && failing:
			m.log.Info("storage scan complete again", "dir", m.dir)
		case err == nil:
			m.log.Debug("storage scan complete", "dir", m.dir, "took", m.clock.Now().Sub(start))
		}
		failing = err != nil
		t := m.clock.NewTimer(m.interval)
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C():
		}
	}
}

// Scan walks the directory now, sums the sizes of the regular files under
// it, publishes the sum as storage_server.consumed and returns it. Entries
// that cannot be read are skipped: the sum is then published anyway and
// the first such error returned. A cancelled ctx abandons the scan and
// publishes nothing.
func (m *StorageMonitor) Scan(ctx context.Context) (int64, error) {
	var total int64
	var firstErr error
	err := filepath.WalkDir(m.dir, func(path string, d fs.DirEntry, err error) error {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if err != nil {
			if path == m.dir {
				return err // the directory itself: nothing to publish
			}
			if firstErr == nil {
				firstErr = err
			}
			if d != nil && d.IsDir() && path != m.dir {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			return nil
		}
		total += info.Size()
		return nil
	})
	if err != nil { // a cancelled ctx, or the directory is unreadable
		return 0, err
	}
	m.consumed.Store(total)
	return total, firstErr
}

// Stats implements Producer.
func (m *StorageMonitor) Stats() stats.Map {
	out := make(stats.Map, 6)
	if c := m.consumed.Load(); c >= 0 {
		out["storage_server.consumed"] = stats.Int(c)
	} else {
		out["storage_server.consumed"] = stats.Null()
	}
	d, err := m.statfs(m.dir)
	if err != nil {
		for _, k := range [...]string{"disk_total", "disk_used", "disk_avail", "disk_free_for_root", "disk_free_for_nonroot"} {
			out["storage_server."+k] = stats.Null()
		}
		return out
	}
	out["storage_server.disk_total"] = stats.Int(d.Total)
	out["storage_server.disk_used"] = stats.Int(d.Total - d.FreeForRoot)
	out["storage_server.disk_free_for_root"] = stats.Int(d.FreeForRoot)
	out["storage_server.disk_free_for_nonroot"] = stats.Int(d.FreeForNonroot)
	out["storage_server.disk_avail"] = stats.Int(max(d.FreeForNonroot-m.reserved, 0))
	return out
}
