// The recording player: makes an asciinema-player from the element's data-cast
// URL, and re-makes it at the speed chosen in #speed, at the same position (and
// playing if it was). Served as a file: the CSP allows no inline script.
(function(){
var el=document.getElementById('player');if(!el||!window.AsciinemaPlayer)return;
var url=el.getAttribute('data-cast'),sel=document.getElementById('speed'),player=null,playing=false;
function make(speed,at,play){
if(player){try{player.dispose();}catch(e){}}
el.textContent='';
var opts={controls:true,speed:speed,idleTimeLimit:2,fit:'width'};
if(at>0){opts.startAt=at;if(!play)opts.poster='npt:'+at;}
if(play)opts.autoPlay=true;
player=AsciinemaPlayer.create(url,el,opts);
playing=!!play;
player.addEventListener('play',function(){playing=true;});
player.addEventListener('playing',function(){playing=true;});
player.addEventListener('pause',function(){playing=false;});
player.addEventListener('ended',function(){playing=false;});}
function speed(){var s=Number(sel?sel.value:1);return s>0?s:1;}
make(speed(),0,false);
if(sel)sel.addEventListener('change',function(){
var at=0,end;try{at=Number(player.getCurrentTime())||0;end=Number(player.getDuration());}catch(e){}
if(end>0&&at>=end)at=0;
make(speed(),at,playing);});})();
