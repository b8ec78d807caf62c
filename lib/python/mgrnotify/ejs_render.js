// Renders EJS templates for mgrnotify, many in one node process (template.py keeps one for a queue run).
//
// stdin:   one JSON request per line: {"id": "...", "template": "...", "data": {...}, "filename": "..."}
// answers: one JSON line per request, {"id": "...", "text": "..."} or {"id": "...", "status": N, "error": "..."},
//          written to the file descriptor named by $MGRNOTIFY_ANSWER_FD (stdout when unset, for trying by hand).
// status:  1 the template failed (ejs's message, with the line); 2 the request is not such a JSON object;
//          3 the ejs package cannot be found.
//
// The answers have a descriptor of their own because a template can write to stdout (console.log,
// process.stdout.write); on a shared stdout its text would be taken for the next answer. Whatever a
// template writes goes to stderr, which template.py reads and logs.
// Plain ES5: node 10 must run it too.
'use strict';

var fs = require('fs');

var STATUS_TEMPLATE = 1;
var STATUS_INPUT = 2;
var STATUS_NO_EJS = 3;
var CACHE_SIZE = 64;   // compiled templates kept: a queue run renders a few templates many times

var answerFd = process.env.MGRNOTIFY_ANSWER_FD ? Number(process.env.MGRNOTIFY_ANSWER_FD) : 1;
delete process.env.MGRNOTIFY_ANSWER_FD;   // templates see process.env; no need to point them at the channel

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

var ejs = null;
var ejsMissing = null;
try {
    ejs = require('ejs');
} catch (e) {
    ejsMissing = 'The ejs package for node is not installed or not on NODE_PATH (' + e.message.split('\n')[0] + ')';
}

// A template can leave a callback behind (setTimeout) that throws later; that must not end the renderer.
process.on('uncaughtException', function (e) {
    process.stderr.write('Uncaught exception in an earlier template: ' + (e && e.stack || e) + '\n');
});

var compiled = new Map();   // template text -> compiled function, oldest first

function compile(job) {
    var fn = compiled.get(job.template);
    if (fn) {
        return fn;
    }
    fn = ejs.compile(job.template, {filename: job.filename});
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

require('readline').createInterface({input: process.stdin, terminal: false}).on('line', function (line) {
    send(answer(line));
});
