package gatherer

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"capstats/capnp/tub"
	"capstats/internal/atomicfile"
)

// Files of a gatherer's basedir.
const (
	KeyFile      = "private/gatherer.pem"
	LocationFile = "location"
	PortFile     = "port"
	FurlFile     = "stats_gatherer.furl"
	StatsFile    = "stats.json"
	// LockFile is flocked by a running gatherer (internal/lockfile).
	LockFile = "gatherer.lock"
)

// CreateOptions say where a new gatherer listens and how nodes reach it:
// either Hostname, or both Location and Port.
type CreateOptions struct {
	// Hostname: pick a free TCP port P, listen on it, advertise tcp:HOST:P.
	Hostname string
	// Location: the connection hints nodes use, e.g. tcp:example.org:3456.
	Location string
	// Port: where to listen: tcp:PORT, tcp:PORT:interface=ADDR or PORT.
	Port string
}

// UsageError is a mistake in how a command was called.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// IsEmptyDir reports whether dir is missing or an empty directory. The lock
// file does not count: `gatherer run` takes the lock before it creates a
// gatherer in an empty basedir.
func IsEmptyDir(dir string) (bool, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("basedir %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.Name() != LockFile {
			return false, nil
		}
	}
	return true, nil
}

// CheckBasedir says, in one line naming the command that fixes it, why dir
// holds no gatherer; nil if it holds one.
func CheckBasedir(dir string) error {
	_, err := os.Stat(filepath.Join(dir, KeyFile))
	if err == nil {
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("basedir %s: %w", dir, err)
	}
	if empty, _ := IsEmptyDir(dir); !empty {
		// gatherer create refuses a directory with files in it: do not
		// suggest it for this one.
		return fmt.Errorf("basedir %s holds no gatherer (no %s); is it the right directory? A new gatherer needs a new one: gatherer create --basedir NEWDIR --hostname HOST", dir, KeyFile)
	}
	what := "does not exist"
	if _, err := os.Stat(dir); err == nil {
		what = "is empty"
	}
	return fmt.Errorf("basedir %s %s. Create a gatherer there with: gatherer create --basedir %s --hostname HOST (or start a loopback-only one with: gatherer --basedir %s)", dir, what, dir, dir)
}

// Create makes a new gatherer basedir: its key, location and port. It
// refuses a directory that is not empty, so an existing gatherer's identity
// is never replaced by accident.
func Create(dir string, o CreateOptions) error {
	switch {
	case o.Hostname != "" && (o.Location != "" || o.Port != ""):
		return &UsageError{"give either --hostname, or both --location and --port, not both"}
	case o.Hostname == "" && (o.Location == "") != (o.Port == ""):
		return &UsageError{"--location and --port go together"}
	case o.Hostname == "" && o.Location == "":
		return &UsageError{"say how nodes reach the gatherer: --hostname HOST, or --location HINTS --port PORT"}
	}
	empty, err := IsEmptyDir(dir)
	if err != nil {
		return err
	}
	if !empty {
		return fmt.Errorf("basedir %s is not empty; a gatherer may already live there (its furl is in %s). Choose a new directory, or remove this one if you mean to start over", dir, filepath.Join(dir, FurlFile))
	}
	location, port := o.Location, o.Port
	if o.Hostname != "" {
		p, err := freePort()
		if err != nil {
			return err
		}
		location = "tcp:" + net.JoinHostPort(o.Hostname, strconv.Itoa(p))
		port = "tcp:" + strconv.Itoa(p)
		if ip := net.ParseIP(o.Hostname); ip != nil && ip.IsLoopback() {
			port += ":interface=" + o.Hostname
		}
	}
	if _, err := ParsePort(port); err != nil {
		return &UsageError{err.Error()}
	}
	if _, err := parseLocation(location); err != nil {
		return &UsageError{err.Error()}
	}
	if err := os.MkdirAll(filepath.Join(dir, "private"), 0o700); err != nil {
		return err
	}
	id, err := tub.NewIdentity()
	if err != nil {
		return err
	}
	if err := id.Save(filepath.Join(dir, KeyFile)); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, LocationFile), []byte(location+"\n"), 0o644); err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, PortFile), []byte(port+"\n"), 0o644)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ParsePort turns tcp:PORT, tcp:PORT:interface=ADDR or PORT into a listen
// address.
func ParsePort(s string) (string, error) {
	s = strings.TrimSpace(s)
	rest := strings.TrimPrefix(s, "tcp:")
	portStr, iface, hasIface := strings.Cut(rest, ":")
	p, err := strconv.Atoi(portStr)
	if err != nil || p < 0 || p > 65535 {
		return "", fmt.Errorf("port %q: want tcp:PORT, tcp:PORT:interface=ADDR or PORT", s)
	}
	host := ""
	if hasIface {
		addr, ok := strings.CutPrefix(iface, "interface=")
		if !ok || addr == "" {
			return "", fmt.Errorf("port %q: after the port only interface=ADDR may follow", s)
		}
		host = addr
	}
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}

// parseLocation checks connection hints by parsing them inside a furl.
func parseLocation(loc string) ([]string, error) {
	loc = strings.TrimSpace(loc)
	f, err := tub.ParseFurl(tub.Scheme + strings.Repeat("a", 32) + "@" + loc + "/" + strings.Repeat("a", 32))
	if err != nil {
		return nil, fmt.Errorf("location %q: want tcp:HOST:PORT[,tcp:HOST:PORT...]", loc)
	}
	return f.Hints, nil
}

func readLine(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}
