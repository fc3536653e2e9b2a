package statsfile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"capstats/stats"
)

// SyntaxError reports input that is not a well-formed stats file: broken
// JSON, or JSON of the wrong shape (a stat that is a string, a node that is
// not an object, ...).
type SyntaxError struct {
	Offset int64  // byte offset of the problem in the input
	Line   int    // 1-based line of Offset
	Column int    // 1-based byte column of Offset
	Msg    string // what is wrong
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("line %d, column %d: %s", e.Line, e.Column, e.Msg)
}

// maxDepth bounds the nesting of values skipped under unknown keys, so that
// hostile input cannot exhaust the stack.
const maxDepth = 1000

// Decode reads a whole stats file from r.
//
// It accepts files written by the original gatherer (nodes with only
// "timestamp", "nickname" and "stats") as well as by capstats, and ignores
// node keys it does not know. Nodes keep their file order. As in the
// original (Python's json.load into a dict), a tub ID that appears twice
// keeps the position of its first appearance and the value of its last.
//
// Values inside "counters" and "stats" must be numbers or null. Integers that
// fit in an int64 stay ints, other numbers are floats. Python's json.dump
// extensions NaN, Infinity and -Infinity, and numbers too large for a
// float64, read as null (stats.Float does the same); true and false read as
// 1 and 0 (Python's bools are ints). A null or missing "nickname" or
// "last_error" reads as "", a missing number as 0. Invalid UTF-8 in strings
// reads as U+FFFD, as with encoding/json. Anything else malformed is a
// *SyntaxError (wrapped) naming the line and column.
//
// The input is read once into memory and scanned by hand rather than with
// encoding/json (or encoding/json/jsontext) because the file is Python's
// json.dump output and must read as Python reads it: NaN, Infinity and
// -Infinity are accepted (encoding/json refuses them); a tub ID or key
// repeated keeps its first position and its last value, as a dict does
// (encoding/json keeps no order, jsontext refuses duplicates by default);
// and an error names the exact line and column, which an operator needs
// to mend a file by hand. It is also faster than encoding/json into maps
// (BENCHMARKS.md, target 5), which the munin plugin, run once per graph,
// benefits from.
func Decode(r io.Reader) (*File, error) {
	return DecodeFiltered(r, nil)
}

// Load reads the stats file at path. Errors name the path; a missing file
// gives an error satisfying errors.Is(err, fs.ErrNotExist).
func Load(path string) (*File, error) {
	return LoadFiltered(path, nil)
}

// Keep selects the counters and stats a filtered read keeps: category is
// "counters" or "stats", name the dotted stat name. It is called once per
// distinct (category, name) in the file, not once per node.
type Keep func(category, name string) bool

// DecodeFiltered is Decode keeping, in each node's maps, only the entries
// keep accepts (all of them if keep is nil). The whole input is still
// checked. It is for readers that need a few stats out of a big file.
func DecodeFiltered(r io.Reader, keep Keep) (*File, error) {
	var buf bytes.Buffer
	switch r := r.(type) {
	case *os.File:
		if fi, err := r.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() < math.MaxInt32 {
			buf.Grow(int(fi.Size()) + bytes.MinRead)
		}
	case interface{ Len() int }: // bytes.Reader, strings.Reader, bytes.Buffer
		buf.Grow(r.Len() + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, fmt.Errorf("statsfile: read: %w", err)
	}
	f, err := decodeBytes(buf.Bytes(), keep)
	if err != nil {
		return nil, fmt.Errorf("statsfile: %w", err)
	}
	return f, nil
}

// LoadFiltered is Load keeping only the entries keep accepts (see
// DecodeFiltered).
func LoadFiltered(path string, keep Keep) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			// Keep the wrapped errno (fs.ErrNotExist etc.) but say what
			// the file is.
			return nil, fmt.Errorf("stats file %s: %w", path, pe.Err)
		}
		return nil, fmt.Errorf("stats file %s: %w", path, err)
	}
	f, err := decodeBytes(data, keep)
	if err != nil {
		return nil, fmt.Errorf("stats file %s: %w", path, err)
	}
	return f, nil
}

func decodeBytes(data []byte, keep Keep) (*File, error) {
	d := decoder{data: data, keep: keep}
	return d.file()
}

type name struct {
	s    string
	keep [2]bool // counters, stats
	// The last counters and stats objects (decoder.object) the name was
	// kept in, and at which position.
	object, at [2]int
}

type decoder struct {
	data    []byte
	pos     int
	scratch []byte // unescaped strings; valid until the next string
	keep    Keep
	// Stat names repeat across nodes: one copy of each, and keep's answer.
	intern map[string]*name
	// The names of the previous node's counters and stats, by position:
	// nodes mostly list the same names in the same order, and comparing
	// with the one expected is cheaper than hashing.
	prev [2][]*name
	// The names the previous node's counters and stats kept, which the
	// next node's share if it keeps the same; list is scratch for them.
	kept [2]*stats.Names
	list []string
	// object numbers the objects of names read, to find a name repeated
	// within one.
	object int

	// Where the decoder is, for error messages only (built when needed).
	inNode bool
	tubid  string
	part   string // "", `"stats"`, `"stats"."counters"`, `"stats"."stats"`
}

// where describes the object being read, for error messages.
func (d *decoder) where() string {
	if !d.inNode {
		return "the stats file"
	}
	w := "node " + strconv.Quote(d.tubid)
	if d.part != "" {
		w += ": " + d.part
	}
	return w
}

// context is ctx, or "in" the object being read when ctx is empty.
func (d *decoder) context(ctx string) string {
	if ctx != "" {
		return ctx
	}
	return "in " + d.where()
}

func (d *decoder) errAt(pos int, format string, args ...any) error {
	if pos > len(d.data) {
		pos = len(d.data)
	}
	line := 1 + bytes.Count(d.data[:pos], []byte{'\n'})
	col := pos + 1
	if nl := bytes.LastIndexByte(d.data[:pos], '\n'); nl >= 0 {
		col = pos - nl
	}
	return &SyntaxError{Offset: int64(pos), Line: line, Column: col, Msg: fmt.Sprintf(format, args...)}
}

// what describes the byte at d.pos for error messages.
func (d *decoder) what() string {
	if d.pos >= len(d.data) {
		return "end of file"
	}
	c := d.data[d.pos]
	if c >= 0x20 && c < 0x7f {
		return strconv.QuoteRune(rune(c))
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

func (d *decoder) skipWS() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

func (d *decoder) peek() byte {
	if d.pos < len(d.data) {
		return d.data[d.pos]
	}
	return 0
}

// next skips whitespace after a member and reports whether another follows
// (',') or the container ends (end). ctx "" means the object being read.
func (d *decoder) next(end byte, ctx string) (more bool, err error) {
	d.skipWS()
	switch d.peek() {
	case ',':
		d.pos++
		return true, nil
	case end:
		d.pos++
		return false, nil
	}
	return false, d.errAt(d.pos, "expected ',' or %q %s, found %s", end, d.context(ctx), d.what())
}

// open consumes the '{' of the object being read (d.where) and reports
// whether it has members.
func (d *decoder) open() (nonEmpty bool, err error) {
	d.skipWS()
	if d.peek() != '{' {
		return false, d.errAt(d.pos, "%s must be an object, found %s", d.where(), d.what())
	}
	d.pos++
	d.skipWS()
	if d.peek() == '}' {
		d.pos++
		return false, nil
	}
	return true, nil
}

// key reads an object key and the ':' after it. The bytes are only valid
// until the next string is read. ctx "" means the object being read.
func (d *decoder) key(ctx string) ([]byte, error) {
	d.skipWS()
	if d.peek() != '"' {
		return nil, d.errAt(d.pos, "expected a quoted key %s, found %s", d.context(ctx), d.what())
	}
	k, err := d.strBytes()
	if err != nil {
		return nil, err
	}
	d.skipWS()
	if d.peek() != ':' {
		return nil, d.errAt(d.pos, "expected ':' after key %q, found %s", k, d.what())
	}
	d.pos++
	d.skipWS()
	return k, nil
}

func (d *decoder) file() (*File, error) {
	d.skipWS()
	if len(d.data) == 0 || d.pos == len(d.data) {
		return nil, d.errAt(d.pos, "the file is empty")
	}
	nonEmpty, err := d.open()
	if err != nil {
		return nil, err
	}
	f := &File{}
	var index map[string]int
	for more := nonEmpty; more; {
		k, err := d.key("(a tub ID)")
		if err != nil {
			return nil, err
		}
		tubid := string(k)
		n, err := d.node(tubid)
		if err != nil {
			return nil, err
		}
		if index == nil {
			index = make(map[string]int, 64)
		}
		if i, dup := index[tubid]; dup {
			f.Nodes[i] = n
		} else {
			index[tubid] = len(f.Nodes)
			f.Nodes = append(f.Nodes, n)
		}
		if more, err = d.next('}', "after a node"); err != nil {
			return nil, err
		}
	}
	d.skipWS()
	if d.pos != len(d.data) {
		return nil, d.errAt(d.pos, "unexpected %s after the end of the stats object", d.what())
	}
	return f, nil
}

func (d *decoder) node(tubid string) (Node, error) {
	n := Node{TubID: tubid}
	d.inNode, d.tubid, d.part = true, tubid, ""
	defer func() { d.inNode = false }()
	nonEmpty, err := d.open()
	if err != nil {
		return n, err
	}
	for more := nonEmpty; more; {
		d.part = ""
		k, err := d.key("")
		if err != nil {
			return n, err
		}
		switch string(k) {
		case "timestamp":
			n.Timestamp, err = d.float("timestamp")
		case "nickname":
			n.Nickname, err = d.stringOrNull("nickname")
		case "stats":
			n.Stats, err = d.snapshot()
		case "up":
			n.Up, err = d.boolean("up")
		case "last_poll":
			n.LastPoll, err = d.float("last_poll")
		case "last_error":
			n.LastError, err = d.stringOrNull("last_error")
		case "poll_seconds":
			n.PollSeconds, err = d.float("poll_seconds")
		default:
			err = d.skipValue(0)
		}
		if err != nil {
			return n, err
		}
		d.part = ""
		if more, err = d.next('}', ""); err != nil {
			return n, err
		}
	}
	return n, nil
}

func (d *decoder) snapshot() (stats.Snapshot, error) {
	var s stats.Snapshot
	d.part = `"stats"`
	nonEmpty, err := d.open()
	if err != nil {
		return s, err
	}
	for more := nonEmpty; more; {
		d.part = `"stats"`
		k, err := d.key("")
		if err != nil {
			return s, err
		}
		switch string(k) {
		case "counters":
			d.part = `"stats"."counters"`
			s.Counters, err = d.valueSet(0)
		case "stats":
			d.part = `"stats"."stats"`
			s.Stats, err = d.valueSet(1)
		default:
			err = d.skipValue(0)
		}
		if err != nil {
			return s, err
		}
		d.part = `"stats"`
		if more, err = d.next('}', ""); err != nil {
			return s, err
		}
	}
	return s, nil
}

// valueSet reads "counters" (ns 0) or "stats" (ns 1). A name that appears
// twice keeps its first position and its last value, as in a dict.
func (d *decoder) valueSet(ns int) (stats.Set, error) {
	nonEmpty, err := d.open()
	if err != nil {
		return stats.Set{}, err
	}
	d.object++
	prev, kept := d.prev[ns], d.kept[ns]
	list := d.list[:0]
	var values []stats.Value
	for i := 0; nonEmpty; i++ {
		var expect *name
		if i < len(prev) {
			expect = prev[i]
		}
		name, err := d.internedKey(expect)
		if err != nil {
			return stats.Set{}, err
		}
		v, err := d.value(name.s, name.keep[ns])
		if err != nil {
			return stats.Set{}, err
		}
		if name.keep[ns] {
			if name.object[ns] == d.object {
				values[name.at[ns]] = v
			} else {
				name.object[ns], name.at[ns] = d.object, len(values)
				if values == nil {
					values = make([]stats.Value, 0, max(kept.Len(), 4))
				}
				list = append(list, name.s)
				values = append(values, v)
			}
		}
		if i < len(prev) {
			prev[i] = name
		} else {
			prev = append(prev, name)
		}
		if nonEmpty, err = d.next('}', ""); err != nil {
			return stats.Set{}, err
		}
	}
	d.prev[ns], d.list = prev, list
	if len(values) == 0 {
		return stats.Set{}, nil
	}
	// Nodes of one grid mostly keep the same names: they share one Names.
	if kept.Len() != len(list) || !slices.Equal(kept.List(), list) {
		// Distinct by construction: a repeated name overwrote its value.
		kept, _ = stats.NewNames(slices.Clone(list))
		d.kept[ns] = kept
	}
	return stats.NewSet(kept, values), nil
}

// internedKey reads a stat name; expect is the likely one, or nil.
func (d *decoder) internedKey(expect *name) (*name, error) {
	k, err := d.key("")
	if err != nil {
		return nil, err
	}
	if expect != nil && expect.s == string(k) {
		return expect, nil
	}
	if n, ok := d.intern[string(k)]; ok {
		return n, nil
	}
	if d.intern == nil {
		d.intern = make(map[string]*name, 64)
	}
	n := &name{s: string(k), keep: [2]bool{true, true}}
	if d.keep != nil {
		n.keep = [2]bool{d.keep("counters", n.s), d.keep("stats", n.s)}
	}
	d.intern[n.s] = n
	return n, nil
}

// literal consumes word if the input continues with it.
func (d *decoder) literal(word string) bool {
	if len(d.data)-d.pos >= len(word) && string(d.data[d.pos:d.pos+len(word)]) == word {
		d.pos += len(word)
		return true
	}
	return false
}

// value reads one stat or counter value; it only checks a number's syntax
// unless convert.
func (d *decoder) value(name string, convert bool) (stats.Value, error) {
	switch c := d.peek(); {
	case c == '-' || (c >= '0' && c <= '9'):
		if d.literal("-Infinity") {
			return stats.Null(), nil
		}
		return d.number(convert)
	case c == 'n' && d.literal("null"),
		c == 'N' && d.literal("NaN"),
		c == 'I' && d.literal("Infinity"):
		return stats.Null(), nil
	case c == 't' && d.literal("true"):
		return stats.Int(1), nil
	case c == 'f' && d.literal("false"):
		return stats.Int(0), nil
	}
	return stats.Value{}, d.errAt(d.pos, "%s: %q must be a number or null, found %s", d.where(), name, d.what())
}

// float reads a number that must be finite, for times and durations.
func (d *decoder) float(key string) (float64, error) {
	start := d.pos
	if c := d.peek(); c != '-' && (c < '0' || c > '9') {
		return 0, d.errAt(d.pos, "%s: %q must be a number, found %s", d.where(), key, d.what())
	}
	v, err := d.number(true)
	if err != nil {
		return 0, err
	}
	if v.IsNull() {
		return 0, d.errAt(start, "%s: %q is out of range", d.where(), key)
	}
	return v.Float(), nil
}

func (d *decoder) boolean(key string) (bool, error) {
	switch {
	case d.literal("true"):
		return true, nil
	case d.literal("false"):
		return false, nil
	}
	return false, d.errAt(d.pos, "%s: %q must be true or false, found %s", d.where(), key, d.what())
}

func (d *decoder) stringOrNull(key string) (string, error) {
	switch d.peek() {
	case '"':
		b, err := d.strBytes()
		return string(b), err
	case 'n':
		if d.literal("null") {
			return "", nil
		}
	}
	return "", d.errAt(d.pos, "%s: %q must be a string, found %s", d.where(), key, d.what())
}

var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// digits returns the end of the run of ASCII digits starting at i.
func digits(data []byte, i int) int {
	for i < len(data) && data[i]-'0' <= 9 {
		i++
	}
	return i
}

// number reads a JSON number at d.pos with stats.ParseNumber's meaning (an
// int when written without '.', 'e' or 'E' and it fits in an int64, a float
// otherwise). Numbers beyond float64's range are null. Unless convert, it
// only checks the syntax. The common short forms are converted here
// without allocating; the rest go to strconv.
func (d *decoder) number(convert bool) (stats.Value, error) {
	data := d.data
	start := d.pos
	i := start
	if data[i] == '-' {
		i++
	}
	// The grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
	intStart := i
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case i < len(data) && data[i] >= '1' && data[i] <= '9':
		i = digits(data, i+1)
	default:
		d.pos = i
		return stats.Value{}, d.errAt(i, "invalid number: expected a digit, found %s", d.what())
	}
	intEnd, fracEnd := i, i
	if i < len(data) && data[i] == '.' {
		fracEnd = digits(data, i+1)
		if fracEnd == i+1 {
			d.pos = i + 1
			return stats.Value{}, d.errAt(i+1, "invalid number: expected a digit after '.', found %s", d.what())
		}
		i = fracEnd
	}
	expStart := i
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		j := digits(data, i)
		if j == i {
			d.pos = i
			return stats.Value{}, d.errAt(i, "invalid number: expected a digit in the exponent, found %s", d.what())
		}
		i = j
	}
	d.pos = i
	if i < len(data) {
		if c := data[i]; c == '.' || c == '+' || c == '-' || c == '_' || (c|0x20 >= 'a' && c|0x20 <= 'z') || (c >= '0' && c <= '9') {
			return stats.Value{}, d.errAt(start, "invalid number %q", data[start:i+1])
		}
	}
	if !convert {
		return stats.Value{}, nil
	}
	neg := data[start] == '-'
	isInt := fracEnd == intEnd && expStart == i
	// Up to 19 significant digits fit in a uint64.
	var mant uint64
	nd := 0
	for j := intStart; j < intEnd; j++ {
		mant = mant*10 + uint64(data[j]-'0')
		nd++
	}
	fracDigits := 0
	if fracEnd > intEnd {
		for j := intEnd + 1; j < fracEnd; j++ {
			mant = mant*10 + uint64(data[j]-'0')
			nd++
			fracDigits++
		}
	}
	if nd <= 19 {
		if isInt && nd <= 18 {
			v := int64(mant)
			if neg {
				v = -v
			}
			return stats.Int(v), nil
		}
		exp := 0
		if expStart < i {
			j := expStart + 1
			expNeg := data[j] == '-'
			if data[j] == '+' || data[j] == '-' {
				j++
			}
			for ; j < i && exp < 100000; j++ {
				exp = exp*10 + int(data[j]-'0')
			}
			if expNeg {
				exp = -exp
			}
		}
		// Exact: mant and 10^|e| are exactly representable, so one
		// correctly rounded operation gives the correctly rounded result.
		if e := exp - fracDigits; !isInt && mant < 1<<53 && e >= -22 && e <= 22 {
			f := float64(mant)
			if e < 0 {
				f /= pow10[-e]
			} else {
				f *= pow10[e]
			}
			if neg {
				f = -f
			}
			return stats.Float(f), nil
		}
	}
	// As stats.ParseNumber, without letting the string escape (so that a
	// short one needs no allocation).
	if isInt {
		if v, err := strconv.ParseInt(string(data[start:i]), 10, 64); err == nil {
			return stats.Int(v), nil
		}
	}
	f, err := strconv.ParseFloat(string(data[start:i]), 64)
	if err != nil {
		// The grammar was checked above, so this is a number beyond
		// float64's range.
		return stats.Null(), nil
	}
	return stats.Float(f), nil
}

// strBytes reads the string starting at d.pos (a '"'). The result aliases
// the input or d.scratch, so it is only valid until the next string.
func (d *decoder) strBytes() ([]byte, error) {
	data := d.data
	start := d.pos + 1
	i := start
	// Eight bytes at a time while none is special ('"', '\\', a control
	// character or non-ASCII).
	for ; i+8 <= len(data); i += 8 {
		if special8(binary.LittleEndian.Uint64(data[i:])) {
			break
		}
	}
	for i < len(data) && plain[data[i]] {
		i++
	}
	if i < len(data) && data[i] == '"' {
		d.pos = i + 1
		return data[start:i], nil
	}
	if i >= len(data) {
		return nil, d.errAt(d.pos, "unterminated string")
	}
	return d.strSlow(start, i)
}

const (
	lo8 = 0x0101010101010101
	hi8 = 0x8080808080808080
)

// special8 reports whether any of the 8 bytes in w is '"', '\\', below 0x20
// or above 0x7f.
func special8(w uint64) bool {
	zeroByte := func(v uint64) uint64 { return (v - lo8) & ^v & hi8 }
	return (zeroByte(w^('"'*lo8)) | zeroByte(w^('\\'*lo8)) | ((w - 0x20*lo8) & ^w & hi8) | (w & hi8)) != 0
}

// plain[c] is true for bytes that stand for themselves in a JSON string.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func (d *decoder) strSlow(start, i int) ([]byte, error) {
	data := d.data
	b := append(d.scratch[:0], data[start:i]...)
	for i < len(data) {
		c := data[i]
		switch {
		case c == '"':
			d.pos = i + 1
			d.scratch = b
			return b, nil
		case c < 0x20:
			return nil, d.errAt(i, "control character 0x%02x in a string (it must be escaped)", c)
		case c >= 0x80:
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size == 1 {
				b = utf8.AppendRune(b, utf8.RuneError)
			} else {
				b = append(b, data[i:i+size]...)
			}
			i += size
		case c != '\\':
			b = append(b, c)
			i++
		default:
			if i+1 >= len(data) {
				return nil, d.errAt(d.pos, "unterminated string")
			}
			switch e := data[i+1]; e {
			case '"', '\\', '/':
				b = append(b, e)
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				r, ok := hex4(data[i+2:])
				if !ok {
					return nil, d.errAt(i, "invalid \\u escape in a string")
				}
				i += 6
				if utf16.IsSurrogate(r) {
					r2, ok := rune(-1), false
					if i+1 < len(data) && data[i] == '\\' && data[i+1] == 'u' {
						r2, ok = hex4(data[i+2:])
					}
					if dec := utf16.DecodeRune(r, r2); ok && dec != utf8.RuneError {
						r = dec
						i += 6
					} else {
						r = utf8.RuneError
					}
				}
				b = utf8.AppendRune(b, r)
				continue
			default:
				return nil, d.errAt(i, "invalid escape '\\%c' in a string", e)
			}
			i += 2
		}
	}
	return nil, d.errAt(d.pos, "unterminated string")
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// skipValue checks and skips any JSON value (under a key it does not know).
func (d *decoder) skipValue(depth int) error {
	if depth > maxDepth {
		return d.errAt(d.pos, "values nested more than %d deep", maxDepth)
	}
	d.skipWS()
	switch c := d.peek(); {
	case c == '"':
		_, err := d.strBytes()
		return err
	case c == '-' || (c >= '0' && c <= '9'):
		if d.literal("-Infinity") {
			return nil
		}
		_, err := d.number(false)
		return err
	case c == '{', c == '[':
		end := byte('}')
		if c == '[' {
			end = ']'
		}
		d.pos++
		d.skipWS()
		if d.peek() == end {
			d.pos++
			return nil
		}
		for more := true; more; {
			if c == '{' {
				if _, err := d.key("in an object"); err != nil {
					return err
				}
			}
			if err := d.skipValue(depth + 1); err != nil {
				return err
			}
			var err error
			if more, err = d.next(end, "in a nested value"); err != nil {
				return err
			}
		}
		return nil
	case d.literal("null"), d.literal("true"), d.literal("false"), d.literal("NaN"), d.literal("Infinity"):
		return nil
	}
	return d.errAt(d.pos, "expected a JSON value, found %s", d.what())
}
