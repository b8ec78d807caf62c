// Renders one EJS template for mgrnotify (template.py runs it under node).
//
// stdin:  one JSON object {"template": "...", "data": {...}, "filename": "..."}
// stdout: the rendered text
// exit:   0 done; 1 the template failed (ejs's message, with the line, on stderr);
//         2 stdin is not such a JSON object; 3 the ejs package cannot be found.
//
// With --lines it renders many: each stdin line is one such JSON object, each stdout line the JSON
// answer {"text": "..."} or {"status": N, "error": "..."} with the statuses above.
'use strict';

var EXIT_TEMPLATE = 1;
var EXIT_INPUT = 2;
var EXIT_NO_EJS = 3;

function fail(status, message) {
    // exitCode rather than process.exit(), so nothing already written is cut off
    process.stderr.write(message + '\n');
    process.exitCode = status;
}

function render(input) {
    var ejs, job;
    try {
        ejs = require('ejs');
    } catch (e) {
        fail(EXIT_NO_EJS, 'The ejs package for node is not installed or not on NODE_PATH (' +
             e.message.split('\n')[0] + ')');
        return;
    }
    try {
        job = JSON.parse(input);
    } catch (e) {
        fail(EXIT_INPUT, 'The EJS runner expected a JSON object on stdin: ' + e.message);
        return;
    }
    if (!job || typeof job.template !== 'string') {
        fail(EXIT_INPUT, 'The EJS runner expected a JSON object with a "template" string on stdin');
        return;
    }
    try {
        process.stdout.write(ejs.render(job.template, job.data || {}, {filename: job.filename}));
    } catch (e) {
        fail(EXIT_TEMPLATE, e.message);
    }
}

function renderLine(ejs, line) {
    var job;
    if (!ejs.module) {
        return {status: EXIT_NO_EJS, error: ejs.error};
    }
    try {
        job = JSON.parse(line);
    } catch (e) {
        return {status: EXIT_INPUT, error: 'The EJS runner expected a JSON object per line: ' + e.message};
    }
    try {
        return {text: ejs.module.render(job.template, job.data || {}, {filename: job.filename})};
    } catch (e) {
        return {status: EXIT_TEMPLATE, error: e.message};
    }
}

if (process.argv.indexOf('--lines') >= 0) {
    var ejs = {};
    try {
        ejs.module = require('ejs');
    } catch (e) {
        ejs.error = 'The ejs package for node is not installed or not on NODE_PATH (' + e.message.split('\n')[0] + ')';
    }
    require('readline').createInterface({input: process.stdin, terminal: false}).on('line', function (line) {
        process.stdout.write(JSON.stringify(renderLine(ejs, line)) + '\n');
    });
} else {
    var chunks = [];
    process.stdin.on('data', function (chunk) { chunks.push(chunk); });
    process.stdin.on('end', function () { render(Buffer.concat(chunks).toString('utf8')); });
}
