package tub

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"strings"
	"time"

	"capstats/internal/atomicfile"
)

// Identity is a tub's persistent key and self-signed certificate. Its tub ID
// is derived from the public key alone, so a re-issued certificate keeps it.
type Identity struct {
	key   ed25519.PrivateKey
	cert  *x509.Certificate
	tubID string
}

// NewIdentity creates a fresh ed25519 key and certificate.
func NewIdentity() (*Identity, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "capstats tub"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(100, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Identity{key: key, cert: cert, tubID: TubIDOf(cert)}, nil
}

// TubIDOf returns the tub ID of a certificate: the first 32 characters of
// the lowercase unpadded base32 SHA-256 of its SubjectPublicKeyInfo.
func TubIDOf(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return strings.ToLower(b32.EncodeToString(sum[:]))[:idLen]
}

// TubID returns the identity's tub ID.
func (id *Identity) TubID() string { return id.tubID }

// Certificate returns the identity's certificate.
func (id *Identity) Certificate() *x509.Certificate { return id.cert }

func (id *Identity) tlsCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{id.cert.Raw}, PrivateKey: id.key, Leaf: id.cert}
}

// MarshalPEM encodes the key and certificate as one PEM file.
func (id *Identity) MarshalPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(id.key)
	if err != nil {
		return nil, err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: id.cert.Raw})...), nil
}

// Save writes the identity atomically to path with mode 0600.
func (id *Identity) Save(path string) error {
	b, err := id.MarshalPEM()
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}

// LoadIdentity reads an identity saved by Save. A file readable by group or
// others is refused: the key is the tub's identity.
func LoadIdentity(path string) (*Identity, error) {
	if err := CheckPrivate(path); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	id, err := parseIdentity(b)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return id, nil
}

// CheckPrivate refuses a file that group or others may read or write.
func CheckPrivate(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s is a directory, not a file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s has mode %#o and may be read by others; it holds a secret: chmod 600 %s", path, perm, path)
	}
	return nil
}

func parseIdentity(b []byte) (*Identity, error) {
	var key ed25519.PrivateKey
	var cert *x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		switch blk.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("private key: %w", err)
			}
			ek, ok := k.(ed25519.PrivateKey)
			if !ok {
				return nil, errors.New("private key is not ed25519")
			}
			key = ek
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("certificate: %w", err)
			}
			cert = c
		}
	}
	if key == nil || cert == nil {
		return nil, errors.New("want a PEM PRIVATE KEY and CERTIFICATE")
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("certificate does not match the private key")
	}
	return &Identity{key: key, cert: cert, tubID: TubIDOf(cert)}, nil
}

// LoadOrCreateIdentity loads the identity at path, or creates and saves a
// new one when there is no file. created reports which happened.
func LoadOrCreateIdentity(path string) (id *Identity, created bool, err error) {
	id, err = LoadIdentity(path)
	if err == nil {
		return id, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	if id, err = NewIdentity(); err != nil {
		return nil, false, err
	}
	if err = id.Save(path); err != nil {
		return nil, false, err
	}
	return id, true, nil
}
