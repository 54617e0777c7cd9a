'use strict';
// Express + express-session sample app for `tlsfront doctor` tests.
//
// Environment:
//   PORT=5003                 port to listen on (127.0.0.1 only)
//   TRUST_PROXY=0|1           app.set('trust proxy', 1): believe one proxy hop's
//                             X-Forwarded-Proto/-Host/-For
//   COOKIE_SECURE=0|1|auto    express-session cookie.secure. With 1 and no
//                             trust proxy, express-session thinks every request
//                             is plain http and silently never sends the cookie:
//                             the classic "session lost behind a proxy" bug.
//   ALLOWED_HOSTS=a,b         refuse (400) requests whose req.hostname (which
//                             honours X-Forwarded-Host under trust proxy) is not
//                             listed, so a forged X-Forwarded-Host is refused
//
// Routes (GET unless noted):
//   /          not logged in: redirect to req.protocol + '://' + req.get('host')
//              + '/login' (absolute); logged in: page with the absolute URL
//   /login     login form; stores a CSRF token in the session, so the session
//              cookie is set (when express-session decides it may)
//   POST /login  alice / wonderland
//   /whoami    JSON: the absolute URL as the app builds it, req.ip, protocol
//   /healthz   "ok"

const crypto = require('node:crypto');
const express = require('express');
const session = require('express-session');

const flag = (name) => ['1', 'true', 'yes', 'on'].includes(String(process.env[name] || '0').toLowerCase());

const TRUST_PROXY = flag('TRUST_PROXY');
const COOKIE_SECURE = (() => {
  const v = String(process.env.COOKIE_SECURE || '0').toLowerCase();
  if (v === 'auto') return 'auto';
  return ['1', 'true', 'yes', 'on'].includes(v);
})();
const ALLOWED_HOSTS = String(process.env.ALLOWED_HOSTS || '')
  .split(',')
  .map((h) => h.trim().toLowerCase())
  .filter(Boolean);
const PORT = Number(process.env.PORT || 5003);
const USERS = { alice: 'wonderland' };

const app = express();
if (TRUST_PROXY) app.set('trust proxy', 1);

if (ALLOWED_HOSTS.length > 0) {
  app.use((req, res, next) => {
    const host = String(req.hostname || '').toLowerCase();
    if (!ALLOWED_HOSTS.includes(host)) {
      res.status(400).type('text/plain').send('Bad Request: host not allowed\n');
      return;
    }
    next();
  });
}

app.use(express.urlencoded({ extended: false }));
app.use(
  session({
    name: 'connect.sid',
    secret: process.env.SESSION_SECRET || 'doctor-test-insecure-secret',
    resave: false,
    saveUninitialized: false,
    cookie: { secure: COOKIE_SECURE, httpOnly: true, sameSite: 'lax', path: '/' },
  }),
);

const absolute = (req, path) => `${req.protocol}://${req.get('host')}${path}`;
const esc = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);

function loginPage(req, error) {
  if (!req.session.csrf) req.session.csrf = crypto.randomBytes(16).toString('hex');
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>Log in</title></head>
<body><h1>Log in</h1>
${error ? `<p id="error">${esc(error)}</p>` : ''}
<form method="post" action="/login">
  <input type="hidden" name="csrf" value="${esc(req.session.csrf)}">
  <p><label>Username <input name="username"></label></p>
  <p><label>Password <input name="password" type="password"></label></p>
  <p><button type="submit">Log in</button></p>
</form>
</body></html>
`;
}

app.get('/', (req, res) => {
  if (!req.session.user) {
    res.redirect(absolute(req, '/login'));
    return;
  }
  res.type('html').send(`<!doctype html>
<html><head><meta charset="utf-8"><title>Home</title></head>
<body><h1 id="protected">Hello, ${esc(req.session.user)}</h1>
<p>You are at <code id="url">${esc(absolute(req, req.originalUrl))}</code></p>
</body></html>
`);
});

app.get('/login', (req, res) => {
  res.type('html').send(loginPage(req, null));
});

app.post('/login', (req, res) => {
  const { username = '', password = '', csrf = '' } = req.body || {};
  if (!req.session.csrf || csrf !== req.session.csrf) {
    res.status(400).type('text/plain').send('CSRF token missing or wrong\n');
    return;
  }
  if (Object.prototype.hasOwnProperty.call(USERS, username) && USERS[username] === password) {
    req.session.regenerate((err) => {
      if (err) {
        res.status(500).send('session error');
        return;
      }
      req.session.user = username;
      res.redirect('/');
    });
    return;
  }
  res.status(401).type('html').send(loginPage(req, 'Invalid username or password.'));
});

app.get('/whoami', (req, res) => {
  res.json({
    url: absolute(req, req.originalUrl),
    protocol: req.protocol,
    secure: req.secure,
    ip: req.ip,
    user: req.session.user || null,
  });
});

app.get('/healthz', (req, res) => {
  res.type('text/plain').send('ok');
});

const server = app.listen(PORT, '127.0.0.1', () => {
  console.log(
    `express sample app listening on http://127.0.0.1:${PORT} ` +
      `(trust proxy=${TRUST_PROXY}, cookie.secure=${COOKIE_SECURE}, allowed hosts=${ALLOWED_HOSTS.join(',') || '*'})`,
  );
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
