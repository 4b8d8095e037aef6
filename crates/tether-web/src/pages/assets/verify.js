// The Verify page's countdown: ticks the server-rendered text and disables the
// buttons at zero. Served as a file: the CSP allows no inline script.
(function(){
var el=document.getElementById('countdown');if(!el)return;
var exp=Number(el.getAttribute('data-expires-at')),srv=Number(el.getAttribute('data-now'));
var deadline=Date.now()+(exp-srv);
function pad(n){return (n<10?'0':'')+n;}
function tick(){var left=Math.max(0,Math.ceil((deadline-Date.now())/1000));
if(left<=0){el.textContent='expired';el.className='warn';
['authorize','deny','remember'].forEach(function(id){var b=document.getElementById(id);if(b)b.disabled=true;});
clearInterval(timer);return;}
el.textContent='expires in '+pad(Math.floor(left/60))+':'+pad(left%60);}
var timer=setInterval(tick,500);tick();})();
