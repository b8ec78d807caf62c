// Renders EJS templates for mgrnotify, many in one node process (template.py keeps one for a queue run).
//
// stdin:   one JSON request per line: {"id": "...", "template": "...", "data": {...}}
// answers: one JSON line per request, {"id": "...", "text": "..."} or {"id": "...", "status": N, "error": "..."},
//          written to the file descriptor named by $MGRNOTIFY_ANSWER_FD (stdout when unset, for trying by hand).
// status:  1 the template failed (ejs's message, with the line); 2 the request is not such a JSON object;
//          3 the pinned ejs package is missing; 4 this process could not give up root, so it renders nothing.
//
// The answers have a descriptor of their own because a template can write to stdout (console.log,
// process.stdout.write); on a shared stdout its text would be taken for the next answer. Whatever a
// template writes goes to stderr, which template.py reads and logs.
//
// Isolation. With $MGRNOTIFY_EJS_USER ("uid:gid", set by template.py when the module runs as root, which
// also starts this process in a network namespace of its own with no_new_privs), everything this script
// needs is loaded first, as root: it may sit below folders only root can enter. Then the process becomes
// that user for good, before it reads any request, so no template can read BILLmanager's files (mode 0600).
// What is done below inside node (no include(), no easy way to require()) is defence in depth only:
// a template is JavaScript and can reach node's modules through import().
// Plain ES5: node 10 (AlmaLinux 8's default nodejs stream) must run it too.
'use strict';

var fs = require('fs');
var path = require('path');

var STATUS_TEMPLATE = 1;
var STATUS_INPUT = 2;
var STATUS_NO_EJS = 3;
var STATUS_NOT_ISOLATED = 4;
var CACHE_SIZE = 64;   // compiled templates kept: a queue run renders a few templates many times
var PARENT_CHECK_MS = 1000;   // how often the renderer looks whether the run that started it is still there
// ejs 3.1.10, pinned and shipped beside this script: the 3.1 line declares node >= 0.10, so it runs on node 10.
var EJS_PACKAGE = path.join(__dirname, 'node_modules', 'ejs');
// process members that hand a template require() or native code in one step: they say so when used
// (not a boundary: the OS isolation is). The functions among them, and the network globals, end in ().
var PROCESS_HANDLES = ['mainModule', 'getBuiltinModule()', 'dlopen()', 'binding()', '_linkedBinding()'];
var NETWORK_GLOBALS = ['fetch()', 'WebSocket()', 'EventSource()', 'XMLHttpRequest()'];   // BILLmanager forbids them
var INCLUDE_REFUSED = 'include() is disabled in notification templates';

var answerFd = process.env.MGRNOTIFY_ANSWER_FD ? Number(process.env.MGRNOTIFY_ANSWER_FD) : 1;
var runAs = process.env.MGRNOTIFY_EJS_USER;
delete process.env.MGRNOTIFY_ANSWER_FD;   // templates see process.env; no need to point them at the channel
delete process.env.MGRNOTIFY_EJS_USER;
var parentPid = process.ppid;

// Templates' console output and process.stdout go to stderr; the answers never share a stream with them.
var stderrConsole = new (require('console').Console)(process.stderr, process.stderr);
Object.keys(console).forEach(function (name) {
    if (typeof console[name] === 'function' && typeof stderrConsole[name] === 'function') {
        console[name] = stderrConsole[name].bind(stderrConsole);
    }
});
process.stdout.write = function () {
    return process.stderr.write.apply(process.stderr, arguments);
};

function refuseInclude() {
    throw new Error(INCLUDE_REFUSED);
}

var ejs = null;
var ejsMissing = null;
try {
    ejs = require(EJS_PACKAGE);
    ejs.fileLoader = refuseInclude;   // the last step of every include(), should the includer be bypassed
} catch (e) {
    ejsMissing = 'The ejs package shipped with mgrnotify cannot be loaded from ' + EJS_PACKAGE + ' ('
        + e.message.split('\n')[0] + ')';
}
// No filename, root or views: ejs then has no folder to look for an include() in, and asks the includer.
var EJS_OPTIONS = {includer: refuseInclude, context: Object.create(null)};

var readline = require('readline');

// "uid:gid" -> this process runs as that user from here on, with no other groups; a sentence when it cannot.
function dropPrivileges(user) {
    var ids = /^(\d+):(\d+)$/.exec(user);
    if (!ids) {
        return 'the user to render as is not "uid:gid" (' + JSON.stringify(user) + ')';
    }
    var uid = Number(ids[1]);
    var gid = Number(ids[2]);
    try {
        process.setgroups([]);
        process.setgid(gid);
        process.setuid(uid);
    } catch (e) {
        return 'node could not become uid ' + uid + ', gid ' + gid + ' (' + e.message + ')';
    }
    if (process.getuid() !== uid || process.geteuid() !== uid || process.getgid() !== gid
            || process.getegid() !== gid || process.getgroups().indexOf(0) !== -1) {
        return 'node still holds root\'s ids after giving them up';
    }
    try {
        process.setuid(0);
    } catch (e) {
        return null;   // as it must: root cannot be had back
    }
    return 'node could take root back after giving it up';
}

var notIsolated = null;
if (runAs !== undefined) {
    notIsolated = dropPrivileges(runAs);
    if (notIsolated) {
        notIsolated = 'EJS templates are not rendered: ' + notIsolated;
    }
}

// owner's member `name` ("x" for a value, "x()" for a function) replaced by a refusal that names it when used.
function refuse(owner, prefix, name) {
    var key = name.replace('()', '');
    var refusal = function () {
        throw new Error(prefix + name + ' is not available in notification templates');
    };
    var descriptor = key === name ? {get: refusal} : {value: refusal, writable: false};
    descriptor.configurable = false;
    try {
        Object.defineProperty(owner, key, descriptor);
    } catch (e) {
        // a node where it cannot be redefined keeps it: these are conveniences, the OS isolation is the boundary
    }
}
PROCESS_HANDLES.forEach(function (name) {
    // node 10's own library still calls process.binding(); from node 12 on only internalBinding().
    if (name.indexOf('binding') === -1 || parseInt(process.versions.node, 10) >= 12) {
        refuse(process, 'process.', name);
    }
});
NETWORK_GLOBALS.forEach(function (name) {
    refuse(global, '', name);
});

// A template can leave a callback behind (setTimeout) that throws later; that must not end the renderer.
process.on('uncaughtException', function (e) {
    process.stderr.write('Uncaught exception in an earlier template: ' + (e && e.stack || e) + '\n');
});
process.on('unhandledRejection', function (e) {
    process.stderr.write('Unhandled rejection in an earlier template: ' + (e && e.stack || e) + '\n');
});

// Giving up root also cleared the kernel's parent-death signal. template.py arms another one (a lifeline
// pipe) that stops even a template in an endless loop; these two end an idle renderer the plain way.
setInterval(function () {
    if (process.ppid !== parentPid) {
        process.exit(0);
    }
}, PARENT_CHECK_MS).unref();

var compiled = new Map();   // template text -> compiled function, oldest first

function compile(job) {
    var fn = compiled.get(job.template);
    if (fn) {
        return fn;
    }
    fn = ejs.compile(job.template, EJS_OPTIONS);
    if (compiled.size >= CACHE_SIZE) {
        compiled.delete(compiled.keys().next().value);
    }
    compiled.set(job.template, fn);
    return fn;
}

function answer(line) {
    var job;
    try {
        job = JSON.parse(line);
    } catch (e) {
        return {status: STATUS_INPUT, error: 'The EJS runner expected a JSON object per line: ' + e.message};
    }
    if (!job || typeof job.template !== 'string') {
        return {id: job && job.id, status: STATUS_INPUT,
                error: 'The EJS runner expected a JSON object with a "template" string'};
    }
    if (notIsolated) {
        return {id: job.id, status: STATUS_NOT_ISOLATED, error: notIsolated};
    }
    if (!ejs) {
        return {id: job.id, status: STATUS_NO_EJS, error: ejsMissing};
    }
    try {
        return {id: job.id, text: compile(job)(job.data || {})};
    } catch (e) {
        return {id: job.id, status: STATUS_TEMPLATE, error: String(e && e.message !== undefined ? e.message : e)};
    }
}

function send(reply) {
    var data = Buffer.from(JSON.stringify(reply) + '\n', 'utf8');
    var done = 0;
    while (done < data.length) {   // a pipe may take a long answer in parts
        done += fs.writeSync(answerFd, data, done, data.length - done);
    }
}

readline.createInterface({input: process.stdin, terminal: false}).on('line', function (line) {
    send(answer(line));
}).on('close', function () {
    process.exit(0);
});
